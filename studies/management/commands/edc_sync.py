"""`python manage.py edc_sync [--study ID | --connection PK] [--full]`: pull from vendor EDCs now
(what the schedule and the webhooks do), one summary line per import."""

from django.core.management.base import BaseCommand, CommandError

from studies.edc.base import EdcError
from studies.edc.services import edc_sync, edc_sync_claim, edc_sync_release
from studies.management.commands.import_odm import study_find
from studies.models import EdcConnection, Import


class Command(BaseCommand):
    help = "Pull metadata and clinical data (changed since the last pull) from the study's vendor EDC connections."

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--study", help="Protocol id or ODM OID: every enabled connection of the study")
        target.add_argument("--connection", type=int, help="One connection, by id")
        parser.add_argument("--full", action="store_true", help="Pull everything, not only what changed")

    def handle(self, *args, study=None, connection=None, full=False, **options):
        if connection is not None:
            connections = list(EdcConnection.objects.filter(pk=connection).select_related("study"))
        else:
            connections = list(EdcConnection.objects.filter(study=study_find(study), enabled=True)
                               .select_related("study"))
        if not connections:
            raise CommandError("No EDC connection to pull.")
        failed = False
        for conn in connections:
            if not edc_sync_claim(connection_id=conn.pk):
                raise CommandError(f"{conn}: a pull is already running.")
            try:
                records = edc_sync(connection=conn, full=full)
            except EdcError as exc:
                raise CommandError(str(exc))
            finally:
                edc_sync_release(connection_id=conn.pk)
            for record in records:
                counts = ", ".join(f"{k}={v}" for k, v in sorted(record.counts.items()) if v)
                error = record.errors[0]["message"] if record.status == Import.Status.FAILED and record.errors else ""
                failed |= record.status != Import.Status.SUCCEEDED
                self.stdout.write(f"{conn}: import {record.pk} {record.status} {error or counts}")
        if failed:
            raise CommandError("At least one pull failed (see above).")
