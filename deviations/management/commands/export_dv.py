"""`python manage.py export_dv --study PROTOCOL_ID OUT.xpt [--csv]`: the study's SDTM DV domain as
SAS transport v5 (one row per deviation of a subject), and with --csv the same rows in OUT.csv."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from deviations.reporting import dv_export
from studies.models import Study


class Command(BaseCommand):
    help = "Export the SDTM DV domain of a study as SAS transport (XPT v5), CSV alongside on request."

    def add_arguments(self, parser):
        parser.add_argument("out", type=Path, help="the .xpt file to write")
        parser.add_argument("--study", required=True, help="the study's protocol id")
        parser.add_argument("--csv", action="store_true", help="also write the rows as CSV beside it")

    def handle(self, *args, out: Path, study: str, csv: bool, **options):
        found = Study.objects.filter(protocol_id=study).first()
        if found is None:
            raise CommandError(f"No study with protocol id {study!r}")
        if out.suffix.lower() != ".xpt":
            raise CommandError(f"{out}: the DV file is SAS transport, name it .xpt")
        if not out.parent.is_dir():
            raise CommandError(f"{out.parent}: no such directory")
        written = dv_export(study=found, path=out, csv=csv)
        self.stdout.write(self.style.SUCCESS(f"{found.protocol_id}: DV, {written['rows']} rows -> {written['xpt']}"
                                             + (f" and {written['csv']}" if csv else "")))
