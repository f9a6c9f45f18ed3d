"""Start a workflow and wait for it: `python manage.py run_workflow ping [--study ID] [--timeout S]`.

Works without any service (the `make demo` case): with no worker reachable it starts one in this
process for the duration of the run (agents.worker.worker_available).
"""

from django.core.management.base import BaseCommand, CommandError

from agents.models import AgentRun, Status
from agents.orchestrator import WorkflowNotFound, workflow_definition, workflow_start
from agents.worker import run_wait, worker_available
from config.celery_app import app


class Command(BaseCommand):
    help = "Start an agent workflow, wait for it to finish and print a summary."

    def add_arguments(self, parser):
        parser.add_argument("name", help="workflow name, e.g. ping")
        parser.add_argument("--study", type=int, default=None, help="study id the run is about")
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")

    def handle(self, *args, name: str, study: int | None, timeout: float, **options):
        try:
            workflow_definition(name)  # fail before starting a worker for nothing
        except WorkflowNotFound as exc:
            raise CommandError(str(exc))
        with worker_available(app) as workers:
            self.stdout.write(f"workers: {', '.join(workers)}")
            run = workflow_start(name=name, study_id=study, trigger=AgentRun.Trigger.MANUAL)
            self.stdout.write(f"run {run.pk}: {name} started ({run.steps_total} steps)")
            run = run_wait(run_id=run.pk, timeout=timeout, on_progress=self._progress)
        summary = f"run {run.pk}: {run.workflow} {run.status}, {run.steps_done}/{run.steps_total} steps"
        if run.status == Status.SUCCEEDED:
            duration = (run.finished_at - run.created_at).total_seconds()
            self.stdout.write(self.style.SUCCESS(f"{summary} in {duration:.1f}s"))
            return
        if not run.is_finished:
            raise CommandError(f"{summary}: timed out after {timeout:g}s")
        raise CommandError(f"{summary}\n{run.error}")

    def _progress(self, run: AgentRun) -> None:
        self.stdout.write(f"  {run.status}: {run.steps_done}/{run.steps_total} steps done")
