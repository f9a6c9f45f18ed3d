"""The one Celery task of the agent framework: run one step of a run, given its id.

Thin on purpose (STYLE.md 8): the step row holds input, claim and output; the task only passes the
id. acks_late is safe because step_execute is idempotent: a redelivered step that was already
done, or is held by a live lease, is skipped by the claim.
"""

import os

from celery import shared_task

from agents.services import step_execute


# ignore_result=False: a group followed by a step is a chord, which counts its members' results in the backend.
@shared_task(name="agents.run_step", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=False)
def run_step(self, step_id: int) -> None:
    # The claim records which worker took the step: hostname from Celery, pid for threads/processes.
    worker = f"{self.request.hostname or 'local'}:{os.getpid()}"
    step_execute(step_id=step_id, worker=worker)
