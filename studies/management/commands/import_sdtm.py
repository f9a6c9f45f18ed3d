from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies.ingest.sdtm import sdtm_import
from studies.management.commands.import_odm import SERVICE_ACCOUNT, actor_get
from studies.models import Import


class Command(BaseCommand):
    help = "Import an SDTM study (SAS transport .xpt or CSV domains under DIR)."

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)
        parser.add_argument("--study", required=True, help="Protocol id or ODM OID (created if absent)")
        parser.add_argument("--actor", default=SERVICE_ACCOUNT, help="Username the writes are attributed to")

    def handle(self, *args, directory, study, actor=SERVICE_ACCOUNT, **options):
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory")
        record = sdtm_import(directory=directory, study=study, actor=actor_get(actor))
        if record.status != Import.Status.SUCCEEDED:
            raise CommandError(f"Import {record.pk} failed: {record.errors[0]['message'] if record.errors else ''}")
        counts = ", ".join(f"{k}={v}" for k, v in sorted(record.counts.items()))
        self.stdout.write(f"Import {record.pk} succeeded: {counts}")
