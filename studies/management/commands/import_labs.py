"""`python manage.py import_labs FILE... --study ID`: load HL7 v2 or FHIR R4 lab results (told apart
by content) into a study, all files in one atomic import."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies.ingest.labs import labs_import
from studies.management.commands.import_odm import SERVICE_ACCOUNT, actor_get, study_find
from studies.models import Import


class Command(BaseCommand):
    help = "Import lab results: HL7 v2 ORU/OUL messages or FHIR R4 Observation/DiagnosticReport/Bundle JSON."

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", type=Path)
        parser.add_argument("--study", required=True, help="Protocol id or ODM OID")
        parser.add_argument("--actor", default=SERVICE_ACCOUNT, help="Username the writes are attributed to")

    def handle(self, *args, files: list[Path], study: str, actor=SERVICE_ACCOUNT, **options):
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CommandError(f"No such file: {', '.join(missing)}.")
        target = study_find(study)
        record = labs_import(paths=files, study=target, actor=actor_get(actor))
        names = files[0].name if len(files) == 1 else f"{len(files)} files"
        if record.status != Import.Status.SUCCEEDED:
            error = record.errors[0] if record.errors else {"message": "unknown error", "where": ""}
            where = f" ({error['where']})" if error.get("where") else ""
            raise CommandError(f"Import {record.pk} of {names} failed: {error['message']}{where}")
        counts = ", ".join(f"{key}={value}" for key, value in sorted(record.counts.items()) if value)
        self.stdout.write(f"Import {record.pk} of {names} into {target.protocol_id} succeeded in "
                          f"{record.duration_seconds or 0:.1f}s: {counts}")
