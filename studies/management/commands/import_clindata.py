from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies.ingest.clindata import clindata_demo_subset, clindata_import
from studies.management.commands.import_odm import SERVICE_ACCOUNT, actor_get
from studies.models import Import


class Command(BaseCommand):
    help = "Load the Gilead clindata study from its parquet tables (or build the demo subset of it)."

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path, help="The clindata parquet directory")
        parser.add_argument("--limit-subjects", type=int, default=None)
        parser.add_argument("--make-demo-subset", type=Path, metavar="OUT", default=None,
                            help="Write the demo subset of DIR to OUT instead of importing")
        parser.add_argument("--actor", default=SERVICE_ACCOUNT, help="Username the writes are attributed to")

    def handle(self, *args, directory, limit_subjects, make_demo_subset, actor=SERVICE_ACCOUNT, **options):
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory")
        if make_demo_subset:
            rows = clindata_demo_subset(source=directory, out=make_demo_subset)
            self.stdout.write(f"Demo subset written to {make_demo_subset}: "
                              + ", ".join(f"{k}={v}" for k, v in rows.items()))
            return
        record = clindata_import(directory=directory, actor=actor_get(actor), limit_subjects=limit_subjects)
        if record.status != Import.Status.SUCCEEDED:
            raise CommandError(f"Import {record.pk} failed: {record.errors[0]['message'] if record.errors else ''}")
        counts = ", ".join(f"{k}={v}" for k, v in sorted(record.counts.items()))
        self.stdout.write(f"Import {record.pk} succeeded: {counts}")
