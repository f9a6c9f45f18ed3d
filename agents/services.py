"""Writes on workflow definitions, runs and steps. A step is claimed by compare-and-set with a
lease, so a task that is delivered twice, or re-run after its worker died, does the work at most
once per claim. Building and enqueuing canvases is agents.orchestrator's job."""

import random
import traceback
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.models import ACTIVE, AgentRun, AgentStep, Status, WorkflowDefinition
from agents.registry import get_agent
from agents.workflow_spec import builtin_sources, spec_checksum, spec_parse

logger = structlog.get_logger(__name__)

ERROR_MAX_CHARS = 4000


class TransientStepError(Exception):
    """Raised by an agent when trying again later may work (an outside service is busy or down).
    Only these errors (and connection errors and time-outs) are retried, per the step's policy."""


TRANSIENT_ERRORS = (TransientStepError, ConnectionError, TimeoutError)


class StepRetryLater(Exception):
    """The step hit a transient error and has retries left: the task re-sends itself after `countdown`."""

    def __init__(self, countdown: float):
        super().__init__(f"retry in {countdown:.1f}s")
        self.countdown = countdown


class WorkflowDefinitionImmutable(ValueError):
    pass


class WorkflowRunOverlap(RuntimeError):
    """Another run of the same workflow on the same study is pending or running."""


class RunNotInState(ValueError):
    pass


def workflow_definition_save(*, source: str, origin: str = "<workflow>") -> WorkflowDefinition:
    """Store a definition from its YAML. Unchanged: returns the stored row. Changed: updates it
    while no run has used it, else refuses (a change is a new version). Locks the row, so a run
    cannot start on it between the check and the write (workflow_start locks it too)."""
    spec = spec_parse(source, origin=origin)
    checksum = spec_checksum(spec)
    fields = {"description": spec.get("description", ""), "spec": spec, "source": source, "checksum": checksum}
    with transaction.atomic():
        definition = (
            WorkflowDefinition.objects.select_for_update().filter(name=spec["name"], version=spec["version"]).first()
        )
        if definition is None:
            return WorkflowDefinition.objects.create(name=spec["name"], version=spec["version"], **fields)
        if definition.checksum == checksum:
            return definition
        if definition.runs.exists():
            raise WorkflowDefinitionImmutable(
                f"{origin}: workflow {definition.name} v{definition.version} has runs and cannot change; "
                f"give the changed definition version {definition.version + 1}"
            )
        for name, value in fields.items():
            setattr(definition, name, value)
        definition.save(update_fields=[*fields])
        return definition


def workflows_sync() -> list[WorkflowDefinition]:
    """Store the built-in definitions of agents/workflows/*.yaml (called by run_workflow and the
    sync_workflows command, never at import time)."""
    return [workflow_definition_save(source=source, origin=path.name) for path, source in builtin_sources()]


def run_create_active(**fields) -> AgentRun:
    """Create a pending run, or refuse when the workflow already has an active run on the study.
    The partial unique index decides, not a prior read: two racing starts cannot both get in."""
    try:
        with transaction.atomic():
            return AgentRun.objects.create(status=Status.PENDING, **fields)
    except IntegrityError:
        raise _overlap(fields["workflow"], fields.get("study_id")) from None


def run_reactivate(*, run: AgentRun, **fields) -> None:
    """Make a finished run active again (retry, rollback), under the same no-overlap rule."""
    try:
        with transaction.atomic():
            AgentRun.objects.filter(pk=run.pk).update(status=Status.RUNNING, finished_at=None, error="", **fields)
    except IntegrityError:
        raise _overlap(run.workflow, run.study_id) from None


def _overlap(workflow: str, study_id: int | None) -> WorkflowRunOverlap:
    active = AgentRun.objects.filter(workflow=workflow, study_id=study_id, status__in=ACTIVE).first()
    running = f"run {active.pk} ({active.status})" if active else "another run"
    study = f"study {study_id}" if study_id is not None else "no study"
    return WorkflowRunOverlap(f"workflow {workflow} is already active on {study}: {running}; wait for it or cancel it")


def run_cancel(*, run_id: int) -> AgentRun:
    """Cancel an active run: its pending steps are cancelled; steps already running finish, but the
    next stage does not start (step_claim only claims steps of an active run)."""
    now = timezone.now()
    with transaction.atomic():
        run = AgentRun.objects.select_for_update().get(pk=run_id)
        if run.status not in ACTIVE:
            raise RunNotInState(f"run {run.pk} is {run.status}; only a pending or running run can be cancelled")
        run.steps.filter(status=Status.PENDING).update(status=Status.CANCELLED, finished_at=now)
        run.status, run.finished_at, run.error = Status.CANCELLED, now, "cancelled"
        run.save(update_fields=["status", "finished_at", "error"])
    logger.info("agent_run_cancelled", run_id=run.pk)
    return run


def step_claim(*, step_id: int, worker: str) -> AgentStep | None:
    """Take `step_id` for `worker`, or return None when another worker holds a live lease or the
    step is already finished. The single UPDATE is the lock: two workers cannot both match."""
    now = timezone.now()
    claimable = Q(status=Status.PENDING) | Q(status=Status.RUNNING, lease_expires_at__lt=now)
    claimed = (
        AgentStep.objects.filter(pk=step_id)
        .filter(claimable)
        # A cancelled (or failed) run claims nothing more, so its next stage does not start.
        .filter(run__status__in=ACTIVE)
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
    if step.run.status == Status.PENDING:  # the first step of the run; later ones skip the query
        AgentRun.objects.filter(pk=step.run_id, status=Status.PENDING).update(status=Status.RUNNING, started_at=now)
    return step


def step_execute(*, step_id: int, worker: str, retries_done: int = 0) -> AgentStep | None:
    """Claim the step, run its agent and record the outcome. Returns None when there was nothing to
    do (step gone, finished, or held by another worker). A transient error with retries left puts
    the step back to pending and raises StepRetryLater (backoff with full jitter, capped). Any other
    error is recorded and re-raised, so the canvas stops after a failed step."""
    step = step_claim(step_id=step_id, worker=worker)
    if step is None:
        logger.info("agent_step_skipped", step_id=step_id, worker=worker)
        return None
    logger.info("agent_step_started", step_id=step.pk, run_id=step.run_id, key=step.key, agent=step.agent)
    try:
        output = get_agent(step.agent).run(step=step)
    except TRANSIENT_ERRORS as exc:
        policy = step.policy or {}
        if retries_done >= policy.get("max", 0):
            _step_fail(step, exc)
            raise
        # Exponential backoff, capped, with full jitter (so retries of parallel steps spread out).
        # Celery's get_exponential_backoff_interval works in whole seconds only.
        countdown = random.uniform(0, min(policy.get("backoff_max", 60), policy.get("backoff", 1) * 2**retries_done))
        _step_finish(step, status=Status.PENDING, output={}, error=_error_summary(exc))
        logger.info("agent_step_retrying", step_id=step.pk, key=step.key, countdown=countdown, error=str(exc))
        raise StepRetryLater(max(0.1, countdown)) from exc
    except Exception as exc:
        _step_fail(step, exc)
        raise
    _step_finish(step, status=Status.SUCCEEDED, output=output or {}, error="")
    logger.info("agent_step_succeeded", step_id=step.pk, run_id=step.run_id, key=step.key)
    return step


def _step_fail(step: AgentStep, exc: Exception) -> None:
    error = _error_summary(exc)
    _step_finish(step, status=Status.FAILED, output={}, error=error)
    logger.warning("agent_step_failed", step_id=step.pk, run_id=step.run_id, key=step.key, error=str(exc))


def _step_finish(step: AgentStep, *, status: str, output: dict, error: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        # `attempts` fences the write: if our lease ran out and another worker re-claimed the step,
        # its attempt number moved on and this late result is dropped.
        written = AgentStep.objects.filter(pk=step.pk, status=Status.RUNNING, attempts=step.attempts).update(
            status=status,
            output=output,
            error=error,
            finished_at=None if status == Status.PENDING else now,
            lease_expires_at=None,
        )
        if written != 1 or status == Status.PENDING:
            return
        if step.compensates_id is not None and status == Status.SUCCEEDED:
            AgentStep.objects.filter(pk=step.compensates_id).update(status=Status.COMPENSATED)
        run_progress(
            run_id=step.run_id,
            failed_step=step if status == Status.FAILED else None,
            error=error,
            compensation=step.compensates_id is not None,
        )


def run_progress(
    *, run_id: int, failed_step: AgentStep | None = None, error: str = "", compensation: bool = False
) -> AgentRun:
    """Recount the run's finished steps and settle its status. Locks the run row so that two
    parallel steps finishing together both get counted. A run with compensation steps is in a
    rollback: it ends compensated when all of them succeeded."""
    with transaction.atomic():
        run = AgentRun.objects.select_for_update().get(pk=run_id)
        run.steps_done = run.steps.filter(compensates=None, status=Status.SUCCEEDED).count()
        if run.is_finished:
            pass  # cancelled meanwhile: a step that was already running only adds to the count
        elif failed_step is not None:
            what = "compensation step" if failed_step.compensates_id else "step"
            run.status = Status.FAILED
            run.error = f"{what} {failed_step.key} ({failed_step.agent}) failed:\n{error}"[:ERROR_MAX_CHARS]
            run.finished_at = timezone.now()
        elif compensation:
            if not run.steps.exclude(compensates=None).exclude(status=Status.SUCCEEDED).exists():
                run.status, run.finished_at = Status.COMPENSATED, timezone.now()
        elif run.steps_done == run.steps_total:
            run.status = Status.SUCCEEDED
            run.finished_at = timezone.now()
        run.save(update_fields=["steps_done", "status", "error", "finished_at"])
    return run


def _error_summary(exc: Exception) -> str:
    """The exception and the last frames of its traceback: enough to find the failing line."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3)
    return "".join(lines)[-ERROR_MAX_CHARS:]
