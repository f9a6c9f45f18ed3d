"""Writes on workflow definitions, runs and steps. A step is claimed by compare-and-set with a
lease, so a task that is delivered twice, or re-run after its worker died, does the work at most
once per claim. Building and enqueuing canvases is agents.orchestrator's job."""

import json
import random
import traceback
from collections.abc import Iterable
from datetime import timedelta

import structlog
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from jsonschema import Draft202012Validator

from agents.models import ACTIVE, AgentConfig, AgentRun, AgentStep, Status, WorkflowDefinition
from agents.registry import Agent, TransientStepError, get_agent  # noqa: F401 (re-exported)
from agents.workflow_spec import builtin_sources, spec_checksum, spec_parse

logger = structlog.get_logger(__name__)

ERROR_MAX_CHARS = 4000


TRANSIENT_ERRORS = Agent.autoretry_for  # the default; each agent may declare its own


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


_CLAIM_SQL = """
UPDATE agents_agentstep
   SET status = %(running)s, claimed_by = %(worker)s, lease_expires_at = %(lease)s,
       attempts = attempts + 1, started_at = %(now)s
 WHERE id = %(step_id)s
   AND (status = %(pending)s OR (status = %(running)s AND lease_expires_at < %(now)s))
   AND run_id IN (SELECT id FROM agents_agentrun WHERE status IN (%(pending)s, %(running)s))
RETURNING *
"""


def step_claim(*, step_id: int, worker: str) -> AgentStep | None:
    """Take `step_id` for `worker`, or return None when another worker holds a live lease, the step
    is finished, or its run is no longer active (a cancelled run claims nothing more, so its next
    stage does not start). The single UPDATE is the lock, and RETURNING gives the claimed row in
    the same round trip (PostgreSQL, SQLite >= 3.35)."""
    now = timezone.now()
    params = {
        "running": Status.RUNNING,
        "pending": Status.PENDING,
        "worker": worker[:255],
        "lease": now + timedelta(seconds=settings.AGENT_STEP_LEASE_SECONDS),
        "now": now,
        "step_id": step_id,
    }
    step = next(iter(AgentStep.objects.raw(_CLAIM_SQL, params)), None)
    if step is None:
        return None
    if step.stage == 0 and step.compensates_id is None:  # the run's first stage may start the run
        AgentRun.objects.filter(pk=step.run_id, status=Status.PENDING).update(status=Status.RUNNING, started_at=now)
    return step


class _LeaseLost(Exception):
    """Our lease ran out and another worker re-claimed the step: roll our work back."""


def step_execute(*, step_id: int, worker: str, retries_done: int = 0) -> AgentStep | None:
    """Claim the step, run its agent and record the outcome. Returns None when there was nothing to
    do (step gone, finished, or held by another worker).

    The agent's database writes and the step's success commit in ONE transaction: a worker killed
    in the middle of a step leaves no work behind, and the step's re-claim does the work once. If
    our lease was lost meanwhile (another worker re-claimed the step), the fenced finish writes
    nothing and our work is rolled back. A transient error (the agent's `autoretry_for`) with
    retries left puts the step back to pending and raises StepRetryLater (backoff with full jitter,
    capped). Any other error is recorded and re-raised, so the canvas stops after a failed step."""
    step = step_claim(step_id=step_id, worker=worker)
    if step is None:
        logger.info("agent_step_skipped", step_id=step_id, worker=worker)
        return None
    logger.info("agent_step_started", step_id=step.pk, run_id=step.run_id, key=step.key, agent=step.agent)
    agent = get_agent(step.agent)
    try:
        with transaction.atomic():
            output = agent.run(step=step)
            if not _step_finish(step, status=Status.SUCCEEDED, output=output or {}, error=""):
                raise _LeaseLost
    except _LeaseLost:
        logger.warning("agent_step_lease_lost", step_id=step.pk, key=step.key, worker=worker)
        return None
    except agent.autoretry_for as exc:
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
    logger.info("agent_step_succeeded", step_id=step.pk, run_id=step.run_id, key=step.key)
    return step


def _step_fail(step: AgentStep, exc: Exception) -> None:
    error = _error_summary(exc)
    _step_finish(step, status=Status.FAILED, output={}, error=error)
    logger.warning("agent_step_failed", step_id=step.pk, run_id=step.run_id, key=step.key, error=str(exc))


def _step_finish(step: AgentStep, *, status: str, output: dict, error: str) -> bool:
    """Record the outcome; False when the write was fenced off (see below)."""
    now = timezone.now()
    if status == Status.SUCCEEDED and step.compensates_id is None and connection.vendor == "postgresql":
        return _step_succeeded_postgresql(step, output=output, now=now)
    # No savepoint: inside step_execute's transaction, a failure here rolls the step back anyway.
    with transaction.atomic(savepoint=False):
        # `attempts` fences the write: if our lease ran out and another worker re-claimed the step,
        # its attempt number moved on and this late result is dropped.
        written = AgentStep.objects.filter(pk=step.pk, status=Status.RUNNING, attempts=step.attempts).update(
            status=status,
            output=output,
            error=error,
            finished_at=None if status == Status.PENDING else now,
            lease_expires_at=None,
        )
        if written != 1:
            return False
        if status == Status.PENDING:
            return True
        if status == Status.SUCCEEDED and step.compensates_id is None:
            run_step_succeeded(run_id=step.run_id, now=now)
            return True
        if step.compensates_id is not None and status == Status.SUCCEEDED:
            AgentStep.objects.filter(pk=step.compensates_id).update(status=Status.COMPENSATED)
        run_progress(
            run_id=step.run_id,
            failed_step=step if status == Status.FAILED else None,
            error=error,
            compensation=step.compensates_id is not None,
        )
    return True


_SUCCEEDED_SQL = """
WITH step AS (
    UPDATE agents_agentstep
       SET status = %(succeeded)s, output = %(output)s::jsonb, error = '', finished_at = %(now)s,
           lease_expires_at = NULL
     WHERE id = %(step_id)s AND status = %(running)s AND attempts = %(attempts)s
 RETURNING run_id
)
UPDATE agents_agentrun
   SET steps_done = steps_done + 1,
       status = CASE WHEN status IN (%(pending)s, %(running)s) AND steps_done = steps_total - 1
                     THEN %(succeeded)s ELSE status END,
       finished_at = CASE WHEN status IN (%(pending)s, %(running)s) AND steps_done = steps_total - 1
                          THEN %(now)s ELSE finished_at END
 WHERE id IN (SELECT run_id FROM step)
"""


def _step_succeeded_postgresql(step: AgentStep, *, output: dict, now) -> bool:
    """The fenced step write and run_step_succeeded's count in ONE statement (one round trip per
    step instead of two: most of a no-op step's cost is round trips)."""
    params = {
        "succeeded": Status.SUCCEEDED,
        "running": Status.RUNNING,
        "pending": Status.PENDING,
        "output": json.dumps(output),
        "now": now,
        "step_id": step.pk,
        "attempts": step.attempts,
    }
    with connection.cursor() as cursor:
        cursor.execute(_SUCCEEDED_SQL, params)
        return cursor.rowcount == 1


def run_step_succeeded(*, run_id: int, now) -> None:
    """Count one more succeeded step, and settle the run when it was the last: one UPDATE (the
    right-hand sides read the row as it was, and the row lock orders parallel steps). A run
    cancelled meanwhile keeps its status; the step still counts."""
    last = Q(status__in=ACTIVE, steps_done=F("steps_total") - 1)
    AgentRun.objects.filter(pk=run_id).update(
        steps_done=F("steps_done") + 1,
        status=Case(When(last, then=Value(Status.SUCCEEDED)), default=F("status")),
        finished_at=Case(When(last, then=Value(now)), default=F("finished_at")),
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


# --- Per-study agent configuration ------------------------------------------------------------------


def agent_config_validate(*, agent: str, config: dict) -> None:
    """Raise ValidationError naming the path of the first invalid value (e.g. `config.seconds`)."""
    schema = get_agent(agent).config_schema
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        messages = {_config_path(error): error.message for error in errors}
        raise ValidationError({"config": [f"{path}: {message}" for path, message in messages.items()]})


def _config_path(error) -> str:
    return "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def agent_config_set(*, agent: str, study_id: int, config: dict, enabled: bool, actor) -> AgentConfig:
    """Store `agent`'s configuration for a study (validated against its config_schema) and whether
    it is enabled there. Audited: the history row names the actor. A paused agent cannot start:
    a run that uses it on that study is refused (agents.orchestrator.workflow_start)."""
    agent_config_validate(agent=agent, config=config)
    with transaction.atomic():
        row = AgentConfig.objects.select_for_update().filter(agent=agent, study_id=study_id).first()
        if row is None:
            row = AgentConfig(agent=agent, study_id=study_id)
        row.config, row.enabled = config, enabled
        row.updated_by = actor if getattr(actor, "pk", None) else None
        row._history_user = row.updated_by
        row._change_reason = "enabled" if enabled else "paused"
        row.save()
    logger.info("agent_config_set", agent=agent, study_id=study_id, enabled=enabled)
    return row


def agent_config_get(*, agent: str, study_id: int) -> AgentConfig:
    """The stored configuration, or an unsaved default (enabled, empty config) when there is none."""
    get_agent(agent)  # an unknown agent is an error, not a silent default
    row = AgentConfig.objects.filter(agent=agent, study_id=study_id).first()
    return row if row is not None else AgentConfig(agent=agent, study_id=study_id, config={}, enabled=True)


def agents_paused(*, agents: Iterable[str], study_id: int | None) -> list[str]:
    """Which of `agents` are paused on the study (one query)."""
    if study_id is None:
        return []
    rows = AgentConfig.objects.filter(agent__in=set(agents), study_id=study_id, enabled=False)
    return sorted(rows.values_list("agent", flat=True))
