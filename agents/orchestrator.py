"""The one place a Celery canvas is built: from a stored WorkflowDefinition (agents.workflow_spec).

A definition's steps are layered into stages by their `after` dependencies; a stage of one step is
a signature, a stage of several (parallel steps, or one step fanned out per site) is a group, and
the stages are chained, so chain(step, group(...), step) becomes chain + chord (hence the result
backend). Every signature is immutable, `run_step.si(step_id)`: state moves through the database
(AgentStep.input/output), not through task return values, so any step can be re-run on its own.
Canvases are enqueued on commit, never inside the transaction that created their rows.

Runs:
- start: one AgentRun (the workflow run; steps_done of steps_total) with one AgentStep per step.
- cancel (agents.services.run_cancel): pending steps are cancelled; running ones finish, but the
  next stage never starts because a step of a run that is not active cannot be claimed.
- retry: the failed (or cancelled) steps and everything after them go back to pending, the run's
  attempt goes up, and the canvas of what is left is enqueued again.
- rollback: the `on_failure` compensation steps of every succeeded step run one by one, most
  recently finished first; each undone step ends `compensated`, and so does the run.

Overlap rule: two runs of one workflow on one study never overlap. A second start is REFUSED with
WorkflowRunOverlap naming the active run (it does not wait). The rule is a partial unique index on
AgentRun (workflow, study) over pending and running runs, so racing starts cannot both get in; a
retry or rollback that would make a finished run active next to another is refused the same way.
"""

from collections.abc import Callable, Iterable

import structlog
from celery import chain, group
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents.models import AgentRun, AgentStep, Status, WorkflowDefinition
from agents.registry import get_agent
from agents.services import (
    RunNotInState,
    WorkflowRunOverlap,
    agents_paused,
    run_create_active,
    run_reactivate,
    workflows_sync,
)
from agents.tasks import run_step
from agents.workflow_spec import builtin_names, compensations, retry_policy, stages

logger = structlog.get_logger(__name__)

FAN_OUT_SEPARATOR = "@"  # a fanned-out step's key: "<step key>@<site id>"


class WorkflowNotFound(LookupError):
    pass


class WorkflowCannotStart(ValueError):
    pass


# --- The hook through which a domain app lists a study's sites (agents imports no domain app) ----
_study_sites: Callable[[int], Iterable[int]] | None = None


def study_sites_provider_set(provider: Callable[[int], Iterable[int]] | None) -> None:
    """Called by the app that owns studies (in its AppConfig.ready) with `study_id -> site ids`."""
    global _study_sites
    _study_sites = provider


def _site_ids(study_id: int | None, step_key: str) -> list[int]:
    if study_id is None:
        raise WorkflowCannotStart(f"step {step_key} fans out per site: start the run with a study")
    if _study_sites is None:
        raise WorkflowCannotStart(f"step {step_key} fans out per site, but no app has registered the study's sites")
    return sorted(int(site_id) for site_id in _study_sites(study_id))


# --- Definitions ------------------------------------------------------------------------------------
def workflow_definition(name: str) -> WorkflowDefinition:
    """The newest version of a workflow; the built-in definitions are synced first if it is unknown."""
    definition = WorkflowDefinition.objects.filter(name=name).order_by("-version").first()
    if definition is None:
        workflows_sync()
        definition = WorkflowDefinition.objects.filter(name=name).order_by("-version").first()
    if definition is None:
        known = sorted(set(WorkflowDefinition.objects.values_list("name", flat=True)))
        raise WorkflowNotFound(f"No workflow named {name!r}; known: {', '.join(known)}")
    return definition


# --- Starting runs ----------------------------------------------------------------------------------
def workflow_start(
    *, name: str, study_id: int | None = None, trigger: str = "manual", actor=None, version: int | None = None
) -> AgentRun:
    """Create the run and its steps in one transaction and enqueue the canvas once it is committed.
    Raises WorkflowRunOverlap when the workflow is already active on the study."""
    definition = workflow_definition(name) if version is None else None
    with transaction.atomic():
        # Locked so the definition cannot change under a starting run (workflow_definition_save locks it too).
        definition = WorkflowDefinition.objects.select_for_update().get(
            name=name, version=version if version is not None else definition.version
        )
        return _run_start(definition.spec, definition=definition, study_id=study_id, trigger=trigger, actor=actor)


def agent_run_start(*, agent: str, study_id: int | None = None, config: dict | None = None, actor=None) -> AgentRun:
    """A one-step run of a registered agent (run_agent), outside any stored definition."""
    spec = {"name": f"agent.{get_agent(agent).name}", "steps": [{"key": agent, "agent": agent, "config": config or {}}]}
    with transaction.atomic():
        return _run_start(spec, definition=None, study_id=study_id, trigger=AgentRun.Trigger.MANUAL, actor=actor)


def workflow_trigger(
    *, trigger: str, name: str | None = None, study_id: int | None = None, event_type: str = ""
) -> list[AgentRun]:
    """Start the newest version of each workflow whose triggers match: `schedule` (by name, from
    celery beat), `import` (on_import) or `event` (on_event: event_type). A workflow already active
    on the study is skipped and logged: a trigger never queues a second run behind the first."""
    # The built-in definitions are synced first, so their triggers count before anyone has run them.
    workflows_sync()
    newest: dict[str, WorkflowDefinition] = {}
    for definition in WorkflowDefinition.objects.order_by("name", "-version"):
        newest.setdefault(definition.name, definition)
    # Tests import studies by the hundred: the built-in workflows follow only the imports of the
    # tests that ask for them (settings.BUILTIN_WORKFLOWS_ON_IMPORT, False in the test settings)
    skipped = builtin_names() if trigger == "import" and not settings.BUILTIN_WORKFLOWS_ON_IMPORT else set()
    started = []
    for definition in newest.values():
        if definition.name in skipped:
            continue
        if not _triggered_by(definition.spec.get("triggers", []), trigger, name=name, event_type=event_type):
            continue
        if trigger == "schedule" and definition.name != name:
            continue
        try:
            started.append(workflow_start(name=definition.name, study_id=study_id, trigger=trigger))
        except (WorkflowRunOverlap, WorkflowCannotStart) as exc:
            logger.warning("workflow_trigger_skipped", workflow=definition.name, trigger=trigger, reason=str(exc))
    return started


def _triggered_by(triggers: list, trigger: str, *, name: str | None, event_type: str) -> bool:
    for declared in triggers:
        if trigger == "import" and declared == "on_import":
            return True
        if trigger == "event" and isinstance(declared, dict) and declared.get("on_event") == event_type:
            return True
        if trigger == "schedule" and isinstance(declared, dict) and "schedule" in declared:
            return True
    return False


def _run_start(spec: dict, *, definition, study_id, trigger, actor) -> AgentRun:
    # Paused agents are refused at start (not skipped mid-run): a run never ends half done because
    # an agent was paused. Pausing takes effect for runs started afterwards.
    paused = agents_paused(agents=[step["agent"] for step in spec["steps"]], study_id=study_id)
    if paused:
        raise WorkflowCannotStart(
            f"agent {', '.join(paused)} is paused on study {study_id}; enable it to start {spec['name']}"
        )
    run = run_create_active(
        workflow=spec["name"],
        definition=definition,
        study_id=study_id,
        trigger=trigger,
        triggered_by=actor,
        # Set by django-structlog's RequestMiddleware when started from a request.
        request_id=str(structlog.contextvars.get_contextvars().get("request_id", ""))[:64],
    )
    rows = [
        _step_row(run, step, stage=number, site_id=site_id)
        for number, stage in enumerate(stages(spec))
        for step in stage
        for site_id in (_site_ids(study_id, step["key"]) if step.get("fan_out") == "sites" else [None])
    ]
    # AgentStep is a ledger of the framework, not an audited domain model: bulk_create is fine here.
    AgentStep.objects.bulk_create(rows)
    run.steps_total = len(rows)
    if not rows:  # every fan-out found no site: nothing to do
        run.status, run.finished_at = Status.SUCCEEDED, timezone.now()
    run.save(update_fields=["steps_total", "status", "finished_at"])
    if rows:
        canvas = _canvas(run.steps.order_by("stage", "id"))
        # A worker must not look for rows that are not committed yet (STYLE.md 5).
        transaction.on_commit(canvas.apply_async)
    logger.info("agent_run_started", run_id=run.pk, workflow=run.workflow, study_id=study_id, steps=len(rows))
    return run


def _step_row(run: AgentRun, step: dict, *, stage: int, site_id: int | None) -> AgentStep:
    agent = get_agent(step["agent"])
    step_input = {"config": step.get("config", {}), "study_id": run.study_id}
    key = step["key"]
    if site_id is not None:
        step_input["site_id"] = site_id
        key = f"{key}{FAN_OUT_SEPARATOR}{site_id}"
    # The definition's retries and time limit win over the agent's declared defaults.
    policy = retry_policy(step) if "retries" in step else agent.retry_policy()
    if step.get("time_limit") or agent.time_limit:
        policy["time_limit"] = step.get("time_limit") or agent.time_limit
        if "time_limit" not in step and agent.soft_time_limit:
            policy["soft_time_limit"] = agent.soft_time_limit
    return AgentStep(
        run=run, key=key, agent=agent.name, agent_version=agent.version, stage=stage, policy=policy, input=step_input
    )


# --- The canvas -------------------------------------------------------------------------------------
def _signature(step: AgentStep):
    options = {"queue": get_agent(step.agent).queue}
    time_limit = (step.policy or {}).get("time_limit")
    if time_limit:
        # The soft limit raises SoftTimeLimitExceeded in the agent (recorded as the step's error)
        # a little before the hard limit kills it.
        soft = (step.policy or {}).get("soft_time_limit") or max(1, time_limit - max(1, time_limit // 10))
        options.update(time_limit=time_limit, soft_time_limit=soft)
    return run_step.si(step.pk).set(**options)


def _canvas(steps: Iterable[AgentStep]):
    """chain of stages; a stage of several steps is a group (chain + group = chord)."""
    by_stage: dict[int, list[AgentStep]] = {}
    for step in steps:
        by_stage.setdefault(step.stage, []).append(step)
    parts = []
    for number in sorted(by_stage):
        signatures = [_signature(step) for step in by_stage[number]]
        parts.append(signatures[0] if len(signatures) == 1 else group(signatures))
    return chain(*parts)


# --- Retry and rollback -----------------------------------------------------------------------------
def run_retry(*, run_id: int) -> AgentRun:
    """Re-run a failed or cancelled run from its first unfinished step: succeeded steps stay done."""
    with transaction.atomic():
        run = AgentRun.objects.select_for_update().get(pk=run_id)
        _require_restartable(run, "retried")
        if run.steps.exclude(compensates=None).exists():
            raise RunNotInState(f"run {run.pk} was rolled back; start a new run instead")
        unfinished = run.steps.filter(compensates=None).exclude(status=Status.SUCCEEDED)
        first_stage = min(unfinished.values_list("stage", flat=True), default=None)
        if first_stage is None:
            raise RunNotInState(f"run {run.pk} has no unfinished step to retry")
        unfinished.filter(status__in=[Status.FAILED, Status.CANCELLED, Status.PENDING]).update(
            status=Status.PENDING, error="", claimed_by="", lease_expires_at=None, started_at=None, finished_at=None
        )
        run_reactivate(run=run, attempt=F("attempt") + 1)
        transaction.on_commit(_canvas(unfinished.order_by("stage", "id")).apply_async)
    logger.info("agent_run_retried", run_id=run.pk, from_stage=first_stage)
    run.refresh_from_db()
    return run


def run_rollback(*, run_id: int) -> AgentRun:
    """Run the compensation steps of the succeeded steps, most recently finished first. A rollback
    whose compensation failed can be started again: the compensations still to do run again."""
    with transaction.atomic():
        run = AgentRun.objects.select_for_update().get(pk=run_id)
        _require_restartable(run, "rolled back")
        undo = list(run.steps.exclude(compensates=None).exclude(status=Status.SUCCEEDED).order_by("stage"))
        if not undo and not run.steps.exclude(compensates=None).exists():
            undo = _compensation_steps_create(run)
        AgentStep.objects.filter(pk__in=[s.pk for s in undo]).update(
            status=Status.PENDING, error="", claimed_by="", lease_expires_at=None, finished_at=None
        )
        if not undo:
            run.status, run.finished_at = Status.COMPENSATED, timezone.now()
            run.save(update_fields=["status", "finished_at"])
            return run
        run_reactivate(run=run)
        transaction.on_commit(chain(*[_signature(step) for step in undo]).apply_async)
    logger.info("agent_run_rollback_started", run_id=run.pk, compensations=len(undo))
    run.refresh_from_db()
    return run


def _compensation_steps_create(run: AgentRun) -> list[AgentStep]:
    declared = {s["key"]: compensations(s) for s in (run.definition.spec["steps"] if run.definition else [])}
    done = run.steps.filter(compensates=None, status=Status.SUCCEEDED).order_by(F("finished_at").desc(), "-id")
    rows = []
    for step in done:
        for number, compensation in enumerate(declared.get(step.key.split(FAN_OUT_SEPARATOR)[0], [])):
            agent = get_agent(compensation["agent"])
            rows.append(
                AgentStep(
                    run=run,
                    key=f"{step.key}.undo{number if number else ''}",
                    agent=agent.name,
                    agent_version=agent.version,
                    stage=len(rows),  # the order they run in, one after another
                    compensates=step,
                    input={**step.input, "config": compensation.get("config", {}), "undoes": step.output},
                )
            )
    AgentStep.objects.bulk_create(rows)
    return list(run.steps.exclude(compensates=None).order_by("stage"))


# --- Steps whose worker died ------------------------------------------------------------------------
def steps_expired_resume() -> list[int]:
    """Re-enqueue what is left of each run whose running step's lease expired (the worker died; its
    message may stay unacknowledged on the broker for hours, and with it the rest of the canvas).
    The expired steps go back to pending by compare-and-set, so two sweeps cannot both resume a
    run; a late redelivery of the original message finds the steps done and does nothing.
    Returns the ids of the runs resumed."""
    now = timezone.now()
    expired = AgentStep.objects.filter(status=Status.RUNNING, lease_expires_at__lt=now, run__status=Status.RUNNING)
    resumed = []
    kinds = {
        (run_id, compensates_id is None) for run_id, compensates_id in expired.values_list("run_id", "compensates")
    }
    for run_id, forward in kinds:  # forward steps, or the compensation steps of a rollback
        kind = {"run_id": run_id, "compensates__isnull": forward}
        with transaction.atomic():
            first_stage = min(expired.filter(**kind).values_list("stage", flat=True), default=None)
            taken = expired.filter(**kind).update(status=Status.PENDING, claimed_by="", lease_expires_at=None)
            if not taken:
                continue  # another sweep took it
            rest = AgentStep.objects.filter(**kind, stage__gte=first_stage).exclude(status=Status.SUCCEEDED)
            transaction.on_commit(_canvas(rest.order_by("stage", "id")).apply_async)
        logger.warning("agent_run_resumed_after_lease_expired", run_id=run_id, from_stage=first_stage)
        resumed.append(run_id)
    return resumed


def _require_restartable(run: AgentRun, verb: str) -> None:
    if run.status not in (Status.FAILED, Status.CANCELLED):
        raise RunNotInState(f"run {run.pk} is {run.status}; only a failed or cancelled run can be {verb}")
