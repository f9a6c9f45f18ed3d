"""What run_workflow and run_agent share: start a worker if none answers, wait for the run with a
progress bar, print a summary, and fail the command when the run failed or did not finish."""

from collections.abc import Callable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agents.models import AgentRun, Status
from agents.worker import run_wait, worker_available
from config.celery_app import app

BAR_WIDTH = 30
# Beyond the steps' own time limits: the worker taking the first task, the canvas between steps.
WAIT_GRACE_SECONDS = 60


def run_wait_seconds(run: AgentRun) -> float:
    """How long a run may take: the sum of its steps' time limits (each step's own, else the
    worker's CELERY_TASK_TIME_LIMIT), one after another as a single worker runs them, plus a grace.
    An agent that bounds its own work to its time limit (DataVerification, however many pages are
    queued) is therefore always waited for to the end."""
    limits = [(step.policy or {}).get("time_limit") or settings.CELERY_TASK_TIME_LIMIT
              for step in run.steps.filter(compensates=None)]
    return float(sum(limits)) + WAIT_GRACE_SECONDS


def run_to_the_end(command: BaseCommand, start: Callable[[], AgentRun], *, timeout: float | None) -> AgentRun:
    """Start the run and wait for it: `timeout` seconds, or by default as long as its steps may take."""
    with worker_available(app) as workers:
        command.stdout.write(f"workers: {', '.join(workers)}")
        run = start()
        if timeout is None:
            timeout = run_wait_seconds(run)
        command.stdout.write(f"run {run.pk}: {run.workflow} started ({run.steps_total} steps; waiting up to "
                             f"{timeout:g}s)")
        run = run_wait(run_id=run.pk, timeout=timeout, on_progress=lambda r: command.stdout.write(progress_bar(r)))
    summary = f"run {run.pk}: {run.workflow} {run.status}, {run.steps_done}/{run.steps_total} steps"
    if run.status == Status.SUCCEEDED:
        duration = (run.finished_at - run.created_at).total_seconds()
        command.stdout.write(command.style.SUCCESS(f"{summary} in {duration:.1f}s"))
        return run
    if not run.is_finished:
        raise CommandError(f"{summary}: timed out after {timeout:g}s")
    raise CommandError(f"{summary}\n{run.error}")


def progress_bar(run: AgentRun) -> str:
    filled = BAR_WIDTH * run.steps_done // run.steps_total if run.steps_total else BAR_WIDTH
    return f"  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {run.steps_done}/{run.steps_total} {run.status}"
