"""The one Celery task of the agent framework: run one step of a run, given its id.

Thin on purpose (STYLE.md 8): the step row holds input, claim and output; the task only passes the
id. acks_late is safe because step_execute is idempotent: a redelivered step that was already
done is skipped by the claim.

When the claim fails, what the step's state says decides what the canvas sees, because the next
stage starts as soon as this task returns: done -> return (the chain goes on); held by a live lease
(a redelivery while its first worker still runs it, or that worker died) -> retry shortly, so the
chain waits until the step is done or its lease runs out and it can be re-claimed; failed or
cancelled -> raise, so the chain stops as it did the first time.
"""

import os

from celery import shared_task
from django.utils import timezone

from agents.models import AgentStep, Status
from agents.services import step_execute

# How often a waiting redelivery looks again at a step held by another worker's live lease.
LEASE_POLL_SECONDS = 2


class StepNotRunnable(RuntimeError):
    """The step already failed or was cancelled: the canvas must not go on past it."""


# ignore_result=False: a group followed by a step is a chord, which counts its members' results in the backend.
@shared_task(name="agents.run_step", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def run_step(self, step_id: int) -> None:
    # The claim records which worker took the step: hostname from Celery, pid for threads/processes.
    worker = f"{self.request.hostname or 'local'}:{os.getpid()}"
    if step_execute(step_id=step_id, worker=worker) is not None:
        return
    step = AgentStep.objects.filter(pk=step_id).only("status", "lease_expires_at", "key").first()
    if step is None or step.status == Status.SUCCEEDED:
        return
    if step.status == Status.RUNNING:
        remaining = (step.lease_expires_at - timezone.now()).total_seconds() if step.lease_expires_at else 0
        raise self.retry(countdown=max(0.1, min(LEASE_POLL_SECONDS, remaining)), max_retries=None)
    raise StepNotRunnable(f"step {step.key} is {step.status}; the run does not go on past it")
