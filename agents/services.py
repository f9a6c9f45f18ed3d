"""Writes on runs and steps. A step is claimed by compare-and-set with a lease, so a task that is
delivered twice, or re-run after its worker died, does the work at most once per claim."""

import traceback
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.models import AgentRun, AgentStep, Status
from agents.registry import get_agent

logger = structlog.get_logger(__name__)

ERROR_MAX_CHARS = 4000


def step_claim(*, step_id: int, worker: str) -> AgentStep | None:
    """Take `step_id` for `worker`, or return None when another worker holds a live lease or the
    step is already finished. The single UPDATE is the lock: two workers cannot both match."""
    now = timezone.now()
    claimable = Q(status=Status.PENDING) | Q(status=Status.RUNNING, lease_expires_at__lt=now)
    claimed = (
        AgentStep.objects.filter(pk=step_id)
        .filter(claimable)
        .update(
            status=Status.RUNNING,
            claimed_by=worker[:255],
            lease_expires_at=now + timedelta(seconds=settings.AGENT_STEP_LEASE_SECONDS),
            attempts=F("attempts") + 1,
            started_at=now,
        )
    )
    if claimed != 1:
        return None
    step = AgentStep.objects.select_related("run").get(pk=step_id)
    AgentRun.objects.filter(pk=step.run_id, status=Status.PENDING).update(status=Status.RUNNING, started_at=now)
    return step


def step_execute(*, step_id: int, worker: str) -> AgentStep | None:
    """Claim the step, run its agent and record the outcome. Returns None when there was nothing to
    do (step gone, finished, or held by another worker). Re-raises the agent's error after
    recording it, so the canvas stops after a failed step."""
    step = step_claim(step_id=step_id, worker=worker)
    if step is None:
        logger.info("agent_step_skipped", step_id=step_id, worker=worker)
        return None
    logger.info("agent_step_started", step_id=step.pk, run_id=step.run_id, key=step.key, agent=step.agent)
    try:
        output = get_agent(step.agent).run(step=step)
    except Exception as exc:
        error = _error_summary(exc)
        _step_finish(step, status=Status.FAILED, output={}, error=error)
        logger.warning("agent_step_failed", step_id=step.pk, run_id=step.run_id, key=step.key, error=str(exc))
        raise
    _step_finish(step, status=Status.SUCCEEDED, output=output or {}, error="")
    logger.info("agent_step_succeeded", step_id=step.pk, run_id=step.run_id, key=step.key)
    return step


def _step_finish(step: AgentStep, *, status: str, output: dict, error: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        # `attempts` fences the write: if our lease ran out and another worker re-claimed the step,
        # its attempt number moved on and this late result is dropped.
        written = AgentStep.objects.filter(pk=step.pk, status=Status.RUNNING, attempts=step.attempts).update(
            status=status, output=output, error=error, finished_at=now, lease_expires_at=None
        )
        if written == 1:
            run_progress(run_id=step.run_id, failed_step=step if status == Status.FAILED else None, error=error)


def run_progress(*, run_id: int, failed_step: AgentStep | None = None, error: str = "") -> AgentRun:
    """Recount the run's finished steps and settle its status. Locks the run row so that two
    parallel steps finishing together both get counted."""
    with transaction.atomic():
        run = AgentRun.objects.select_for_update().get(pk=run_id)
        run.steps_done = run.steps.filter(status=Status.SUCCEEDED).count()
        if failed_step is not None and not run.is_finished:
            run.status = Status.FAILED
            run.error = f"step {failed_step.key} ({failed_step.agent}) failed:\n{error}"[:ERROR_MAX_CHARS]
            run.finished_at = timezone.now()
        elif run.steps_done == run.steps_total and not run.is_finished:
            run.status = Status.SUCCEEDED
            run.finished_at = timezone.now()
        run.save(update_fields=["steps_done", "status", "error", "finished_at"])
    return run


def _error_summary(exc: Exception) -> str:
    """The exception and the last frames of its traceback: enough to find the failing line."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3)
    return "".join(lines)[-ERROR_MAX_CHARS:]
