"""Events between agents: an agent publishes a typed fact as a row; workflows subscribe to it with
`on_event: <type>` in their triggers. No agent calls another: the event row is the only link.

publish: the row is written in the caller's transaction (an agent's step commits its work and
its events together) and dispatched after commit. dispatch: in one transaction, mark the event
processed by compare-and-set and start the subscribed workflows; a redelivered dispatch finds it
processed and does nothing, and a dispatch that dies half-way rolls back and is done again. A
subscribed workflow already active on the study is skipped (logged), as for any trigger.
"""

import structlog
from django.db import transaction
from django.utils import timezone

from agents.models import AgentRun, AgentStep, Event

logger = structlog.get_logger(__name__)


def event_publish(*, type: str, study_id: int | None, payload: dict, source_step: AgentStep | None = None) -> Event:
    event = Event.objects.create(
        type=type,
        study_id=study_id,
        payload=payload,
        source_step=source_step,
        source_run_id=source_step.run_id if source_step is not None else None,
    )
    from agents.tasks import event_dispatch as dispatch_task  # tasks import the orchestrator, which imports us

    transaction.on_commit(lambda: dispatch_task.delay(event.pk))
    logger.info("agent_event_published", event_id=event.pk, type=type, study_id=study_id)
    return event


def event_dispatch(*, event_id: int) -> list[AgentRun]:
    """Start the workflows subscribed to the event, once. Returns the runs started (none when the
    event was already processed, or is gone)."""
    from agents.orchestrator import workflow_trigger

    with transaction.atomic():
        if Event.objects.filter(pk=event_id, processed_at=None).update(processed_at=timezone.now()) != 1:
            logger.info("agent_event_already_processed", event_id=event_id)
            return []
        event = Event.objects.get(pk=event_id)
        runs = workflow_trigger(trigger="event", study_id=event.study_id, event_type=event.type)
        Event.objects.filter(pk=event_id).update(started_runs=[run.pk for run in runs])
    logger.info("agent_event_dispatched", event_id=event_id, type=event.type, runs=[run.pk for run in runs])
    return runs
