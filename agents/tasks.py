"""The one Celery task of the agent framework: run one step of a run, given its id.

Thin on purpose (STYLE.md 8): the step row holds input, claim and output; the task only passes the
id. acks_late is safe because step_execute is idempotent: a redelivered step that was already
done is skipped by the claim.

When the claim fails, what the step's state says decides what the canvas sees, because the next
stage starts as soon as this task returns: done -> return (the chain goes on); held by a live lease
(a redelivery while its first worker still runs it, or that worker died) -> retry shortly, so the
chain waits until the step is done or its lease runs out and it can be re-claimed; failed or
cancelled -> raise, so the chain stops as it did the first time.

A transient error with retries left (the step's policy, from its definition) re-sends the same
task after a jittered backoff: a retry keeps its place in the chain or chord. Time limits come
from the definition too, set on the signature by the orchestrator.
"""

import os
import time

import structlog
from celery import shared_task
from celery.signals import worker_ready
from django.utils import timezone

from agents.models import AgentStep, Status
from agents.services import StepRetryLater, step_execute

logger = structlog.get_logger(__name__)

# How often a waiting redelivery looks again at a step held by another worker's live lease.
LEASE_POLL_SECONDS = 2


class StepNotRunnable(RuntimeError):
    """The step already failed or was cancelled: the canvas must not go on past it."""


# ignore_result=False: a group followed by a step is a chord, which counts its members' results in the backend.
@shared_task(name="agents.run_step", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def run_step(self, step_id: int) -> None:
    # The claim records which worker took the step: hostname from Celery, pid for threads/processes.
    worker = f"{self.request.hostname or 'local'}:{os.getpid()}"
    try:
        if step_execute(step_id=step_id, worker=worker, retries_done=self.request.retries) is not None:
            return
    except StepRetryLater as later:
        # The step's policy caps the retries (step_execute decides); Celery's own cap is off.
        raise self.retry(countdown=later.countdown, max_retries=None) from None
    step = AgentStep.objects.filter(pk=step_id).only("status", "lease_expires_at", "key").first()
    if step is None or step.status == Status.SUCCEEDED:
        return
    if step.status == Status.RUNNING:
        remaining = (step.lease_expires_at - timezone.now()).total_seconds() if step.lease_expires_at else 0
        raise self.retry(countdown=max(0.1, min(LEASE_POLL_SECONDS, remaining)), max_retries=None)
    raise StepNotRunnable(f"step {step.key} is {step.status}; the run does not go on past it")


@shared_task(name="agents.noop", ignore_result=False)
def noop() -> float:
    """Nothing, for bench_orchestrator's bare Celery chain; returns when it ran (epoch seconds)."""
    return time.time()


@shared_task(name="agents.workflow_start_scheduled")
def workflow_start_scheduled(name: str) -> None:
    """Celery beat's entry for a definition's `schedule` trigger (config/celery_app.py)."""
    from agents.orchestrator import workflow_trigger  # the orchestrator imports this module

    workflow_trigger(name=name, trigger="schedule")


@shared_task(name="agents.steps_reclaim_expired")
def steps_reclaim_expired() -> int:
    """Celery beat's sweeper: re-enqueue the steps whose lease ran out while running (their worker
    died, and the broker may hold its unacknowledged message for hours), so no run stays running
    forever. Returns how many runs were resumed."""
    from agents.orchestrator import steps_expired_resume  # the orchestrator imports this module

    return len(steps_expired_resume())  # runs resumed


@shared_task(name="agents.event_dispatch", acks_late=True, reject_on_worker_lost=True)
def event_dispatch(event_id: int) -> None:
    """Start the workflows subscribed to the event; a redelivery of a processed event does nothing."""
    from agents.events import event_dispatch as dispatch

    dispatch(event_id=event_id)


# --- Worker heartbeats (agents.health) --------------------------------------------------------------
HEARTBEAT_SECONDS = 60


def heartbeat_record(*, hostname: str, queues: list[str]) -> None:
    from agents.models import WorkerHeartbeat

    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname[:255], defaults={"queues": queues, "last_seen_at": timezone.now()}
    )


def _heartbeat_safely(hostname: str, queues: list[str]) -> None:
    try:
        heartbeat_record(hostname=hostname, queues=queues)
    except Exception as exc:  # a database hiccup must not take the worker's event loop down
        logger.warning("worker_heartbeat_failed", error=str(exc))


@worker_ready.connect
def _heartbeat_start(sender, **kwargs):
    # One row write a minute from the worker's main process, on its own timer: no task, no broker
    # round trip, no cost per step. Sent by `celery worker` (not by the test suite's thread worker).
    queues = sorted(queue.name for queue in sender.task_consumer.queues)
    _heartbeat_safely(sender.hostname, queues)
    sender.timer.call_repeatedly(HEARTBEAT_SECONDS, _heartbeat_safely, (sender.hostname, queues), priority=10)
