"""`python manage.py import_deviation_plan FILE --study PROTOCOL_ID [--reason TEXT]`: store a study's
deviation plan (JSON) as its next version; an unchanged file changes nothing, a bad one is refused
with a message naming the key (and nothing is stored)."""

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from deviations.plan import PlanInvalid, plan_import
from studies.audit import system_account
from studies.models import Study

MAX_BYTES = 5 * 1024 * 1024  # a plan is a few kB; anything this big is not one


class Command(BaseCommand):
    help = "Import a study's deviation plan (JSON) as a new, audited version."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--study", required=True, help="the study's protocol id (as import_sdtm --study)")
        parser.add_argument("--reason", default="", help="why this plan version (default: names the file)")
        parser.add_argument("--actor", default="", help="username the import is attributed to "
                                                        "(default: the system.import account)")

    def handle(self, *args, file: Path, study: str, reason: str, actor: str, **options):
        found = Study.objects.filter(protocol_id=study).first()
        if found is None:
            raise CommandError(f"No study with protocol id {study!r}")
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        if file.stat().st_size > MAX_BYTES:
            raise CommandError(f"{file}: {file.stat().st_size} bytes is too big for a deviation plan")
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CommandError(f"{file}: not JSON ({error})") from None
        user = system_account("system.import")
        if actor:
            user = get_user_model().objects.filter(username=actor).first()
            if user is None:
                raise CommandError(f"No user {actor!r}")
        try:
            plan, created = plan_import(study=found, content=content, actor=user,
                                        reason=reason or f"Deviation plan imported from {file.name}",
                                        filename=file.name)
        except PlanInvalid as error:
            raise CommandError("The deviation plan is not valid:\n  " + "\n  ".join(error.problems)) from None
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        if created:
            self.stdout.write(self.style.SUCCESS(f"{found.protocol_id}: deviation plan version {plan.version} stored"))
        else:
            self.stdout.write(f"{found.protocol_id}: unchanged, version {plan.version} stays in force")
