"""`python manage.py import_odm FILE [--study ID] [--full-snapshot]`: load a CDISC ODM 1.3.x file."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from studies.audit import system_account
from studies.ingest.base import IMPORT_ACCOUNT
from studies.ingest.odm import odm_import
from studies.models import Import, Study

SERVICE_ACCOUNT = IMPORT_ACCOUNT


def study_find(identifier: str) -> Study:
    """A study by its protocol id or its ODM OID (the contract of every import/export command)."""
    study = Study.objects.filter(Q(protocol_id=identifier) | Q(oid=identifier)).first()
    if study is None:
        raise CommandError(f"No study with protocol id or ODM OID {identifier!r}.")
    return study


def actor_get(username: str):
    """The account the command's writes are attributed to (Part 11: every write has an actor)."""
    return system_account(username)


class Command(BaseCommand):
    help = "Import a CDISC ODM 1.3.x file (metadata, clinical data, audit records, vendor queries)."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--study", help="Protocol id or ODM OID; default: the file's Study OID")
        parser.add_argument("--full-snapshot", action="store_true",
                            help="Flag stored values the file no longer holds as missing in source")
        parser.add_argument("--actor", default=SERVICE_ACCOUNT, help="Username the writes are attributed to")

    def handle(self, *args, file: Path, study=None, full_snapshot=False, actor=SERVICE_ACCOUNT, **options):
        if not file.is_file():
            raise CommandError(f"{file}: no such file.")
        target = study_find(study) if study else None
        record = odm_import(path=file, actor=actor_get(actor), study=target, full_snapshot=full_snapshot)
        if record.status != Import.Status.SUCCEEDED:
            error = record.errors[0] if record.errors else {"message": "unknown error", "where": ""}
            where = f" ({error['where']})" if error.get("where") else ""
            raise CommandError(f"Import {record.pk} of {file.name} failed: {error['message']}{where}")
        counts = ", ".join(f"{key}={value}" for key, value in sorted(record.counts.items()) if value)
        study_label = record.study.protocol_id if record.study else "-"
        self.stdout.write(f"Import {record.pk} of {file.name} into {study_label} succeeded in "
                          f"{record.duration_seconds or 0:.1f}s: {counts}")
