"""Store the built-in workflow definitions (agents/workflows/*.yaml), or the files given:
`python manage.py sync_workflows [FILE.yaml ...]`. An invalid file is refused with its line."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from agents.services import WorkflowDefinitionImmutable, workflow_definition_save, workflows_sync
from agents.workflow_spec import WorkflowSpecError


class Command(BaseCommand):
    help = "Validate and store workflow definitions (the built-in ones by default)."

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="*", help="YAML files; default: agents/workflows/*.yaml")

    def handle(self, *args, files: list[str], **options):
        try:
            if files:
                stored = [workflow_definition_save(source=Path(f).read_text(), origin=f) for f in files]
            else:
                stored = workflows_sync()
        except (WorkflowSpecError, WorkflowDefinitionImmutable, OSError) as exc:
            raise CommandError(str(exc))
        for definition in stored:
            self.stdout.write(f"{definition.name} v{definition.version} {definition.checksum[:12]}")
