"""`python manage.py import_monitoring_plan FILE --study PROTOCOL_ID [--plan]`: import a monitoring
plan (JSON; see sdv/monitoring/plan_import.py), stored as a new version, audited. A bad file is
refused with a message naming the key, and nothing is stored. `--plan` schedules the visits at once
(what `run_agent MonitoringOrchestrator --study ID` does)."""

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from sdv.monitoring.plan_import import MAX_BYTES, monitoring_plan_import
from sdv.monitoring.services import monitoring_plan_schedule
from studies.audit import system_account
from studies.models import Study


def _message(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{key}: {' '.join(messages)}" for key, messages in exc.message_dict.items())
    return " ".join(exc.messages)


class Command(BaseCommand):
    help = "Import a monitoring plan (JSON) for a study: monitors, site locations and tier overrides."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--study", required=True, help="the study's protocol id")
        parser.add_argument("--plan", action="store_true", help="schedule the visits after the import")

    def handle(self, *args, file: str, study: str, plan: bool, **options):
        target = Study.objects.filter(protocol_id=study).first()
        if target is None:
            raise CommandError(f"No study with protocol id {study!r}")
        path = Path(file)
        try:
            if path.stat().st_size > MAX_BYTES:
                raise CommandError(f"{file}: larger than {MAX_BYTES // (1024 * 1024)} MiB")
            raw = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror}")
        actor = system_account("system.import")
        try:
            stored = monitoring_plan_import(study=target, raw=raw, actor=actor, filename=path.name)
        except ValidationError as exc:
            raise CommandError(f"{file}: plan refused, nothing stored: {_message(exc)}")
        self.stdout.write(f"Monitoring plan v{stored.version} of {target.protocol_id}: {len(stored.document['sites'])}"
                          f" site(s), {len(stored.document['monitors'])} monitor(s), "
                          f"{stored.tier_overrides.count()} tier override(s)")
        if plan:
            try:
                figures = monitoring_plan_schedule(study=target, actor=actor)
            except ValidationError as exc:
                raise CommandError(f"planning failed: {_message(exc)}")
            self.stdout.write(f"Planned {figures['visits']} visit(s) ({figures['on_site']} on site, {figures['trips']} "
                              f"trip(s)): {figures['travel_km']} km against {figures['naive_km']} km naive, "
                              f"solver {figures['solver_seconds']} s")
            for unplanned in figures["unplanned"]:
                self.stderr.write(f"Not planned: {unplanned['why']}")
