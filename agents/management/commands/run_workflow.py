"""Start a workflow and wait for it: `python manage.py run_workflow NAME [--study ID]`.

`--workflow-version N` picks an older version (default: the newest). Syncs the built-in
definitions (agents/workflows/*.yaml) first. Works without any service (the
`make demo` case): with no worker reachable it starts one in this process for the duration of the
run (agents.worker.worker_available). Exits non-zero when the run failed or timed out.
"""

from django.core.management.base import BaseCommand, CommandError

from agents.models import AgentRun
from agents.orchestrator import WorkflowCannotStart, WorkflowNotFound, workflow_definition, workflow_start
from agents.services import WorkflowRunOverlap, workflows_sync
from agents.workflow_spec import WorkflowSpecError

from ._run_progress import run_to_the_end


class Command(BaseCommand):
    help = "Start an agent workflow, wait for it to finish and print a summary."

    def add_arguments(self, parser):
        parser.add_argument("name", help="workflow name, e.g. ping")
        parser.add_argument("--study", type=int, default=None, help="study id the run is about")
        parser.add_argument("--workflow-version", dest="workflow_version", type=int, help="default: newest")
        parser.add_argument("--timeout", type=float, default=None,
                            help="seconds to wait (default: the steps' time limits plus a minute)")

    def handle(self, *args, name: str, study: int | None, workflow_version: int | None, timeout: float | None,
               **options):
        try:
            workflows_sync()
            workflow_definition(name)  # fail before starting a worker for nothing
        except (WorkflowNotFound, WorkflowSpecError) as exc:
            raise CommandError(str(exc))

        def start() -> AgentRun:
            try:
                return workflow_start(
                    name=name, study_id=study, version=workflow_version, trigger=AgentRun.Trigger.MANUAL
                )
            except (WorkflowRunOverlap, WorkflowCannotStart) as exc:
                raise CommandError(str(exc))

        run_to_the_end(self, start, timeout=timeout)
