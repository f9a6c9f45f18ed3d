"""`python manage.py export_odm --study ID OUT`: write a study as CDISC ODM 1.3.2 with its audit trail and queries."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies.ingest.odm_export import odm_export
from studies.management.commands.import_odm import study_find


class Command(BaseCommand):
    help = "Export a study's definitions, clinical data, audit records and queries as CDISC ODM 1.3.2."

    def add_arguments(self, parser):
        parser.add_argument("--study", required=True, help="Protocol id or ODM OID")
        parser.add_argument("out", type=Path)
        parser.add_argument("--no-queries", action="store_true", help="Leave the queries out")

    def handle(self, *args, study: str, out: Path, no_queries=False, **options):
        target = study_find(study)
        try:
            counts = odm_export(study=target, out=out, include_queries=not no_queries)
        except OSError as exc:
            raise CommandError(f"Cannot write {out}: {exc.strerror or exc}")
        summary = ", ".join(f"{key}={value}" for key, value in sorted(counts.items()))
        self.stdout.write(f"Exported {target.protocol_id} to {out}: {summary}")
