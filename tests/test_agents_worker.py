"""The agent framework on a real Celery worker (never eager mode): the ping workflow, claims,
leases, redelivery and failure. The worker runs in a thread of this process, on the in-memory
broker, or on Redis when REDIS_URL is set; transaction=True because it reads committed rows."""

import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import AgentRun, AgentStep, Status
from agents.orchestrator import workflow_start
from agents.registry import Agent, register, unregister
from agents.services import step_claim, workflow_definition_save
from agents.tasks import StepNotRunnable, run_step
from agents.worker import run_wait

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TASK_TIMEOUT = 30


class FailingAgent(Agent):
    name = "test_failing"
    description = "Always fails, as an agent whose outside service is down would."

    def run(self, *, step) -> dict:
        raise RuntimeError("the outside service said no")


FAILING_WORKFLOW = """
name: test_failing
version: 1
steps:
  - {key: start, agent: ping}
  - {key: ping_a, agent: ping, after: [start]}
  - {key: boom, agent: test_failing, after: [start]}
  - {key: finish, agent: ping, after: [ping_a, boom]}
"""


@pytest.fixture
def failing_workflow():
    register(FailingAgent)
    workflow_definition_save(source=FAILING_WORKFLOW)
    yield "test_failing"
    unregister(FailingAgent.name)


def _lone_step(*, status=Status.PENDING, attempts=0, claimed_by="", lease_expires_at=None) -> AgentStep:
    """A one-step ping run that no canvas was enqueued for, so the test sends the task itself."""
    run = AgentRun.objects.create(workflow="ping", steps_total=1, status=Status.RUNNING)
    return AgentStep.objects.create(
        run=run,
        key="ping_a",
        agent="ping",
        agent_version="1",
        status=status,
        attempts=attempts,
        claimed_by=claimed_by,
        lease_expires_at=lease_expires_at,
    )


def test_the_ping_workflow_runs_to_success_on_a_real_worker(worker):
    run = workflow_start(name="ping")

    run = run_wait(run_id=run.pk, timeout=TASK_TIMEOUT)

    assert run.status == Status.SUCCEEDED, run.error
    assert run.steps_done == run.steps_total == 4
    assert run.started_at and run.finished_at and run.error == ""
    steps = list(run.steps.order_by("id"))
    assert [s.key for s in steps] == ["start", "ping_a", "ping_b", "finish"]
    for step in steps:
        assert step.status == Status.SUCCEEDED
        assert step.attempts == 1
        assert step.output == {"pong": True, "worker": step.claimed_by}
        assert step.claimed_by.endswith(f":{os.getpid()}")  # this process's worker thread
        assert step.lease_expires_at is None and step.finished_at >= step.started_at
    # The group ran between start and finish: finish began only after both pings ended.
    start, ping_a, ping_b, finish = steps
    assert start.finished_at <= min(ping_a.started_at, ping_b.started_at)
    assert finish.started_at >= max(ping_a.finished_at, ping_b.finished_at)


def test_a_redelivered_step_that_already_succeeded_changes_nothing(worker):
    run = run_wait(run_id=workflow_start(name="ping").pk, timeout=TASK_TIMEOUT)
    step = run.steps.get(key="ping_a")
    before = AgentStep.objects.values().get(pk=step.pk)

    run_step.delay(step.pk).get(timeout=TASK_TIMEOUT)

    assert AgentStep.objects.values().get(pk=step.pk) == before
    run.refresh_from_db()
    assert (run.status, run.steps_done) == (Status.SUCCEEDED, 4)


def test_a_step_whose_lease_expired_is_claimed_again_and_completes(worker):
    step = _lone_step(
        status=Status.RUNNING,
        attempts=1,
        claimed_by="dead-worker:1",
        lease_expires_at=timezone.now() - timedelta(minutes=1),
    )

    run_step.delay(step.pk).get(timeout=TASK_TIMEOUT)

    step.refresh_from_db()
    assert step.status == Status.SUCCEEDED
    assert step.attempts == 2
    assert step.claimed_by.endswith(f":{os.getpid()}")  # this process's worker thread
    assert step.output["pong"] is True
    step.run.refresh_from_db()
    assert (step.run.status, step.run.steps_done) == (Status.SUCCEEDED, 1)


def test_a_redelivered_step_under_a_live_lease_waits_for_it_and_does_not_run_it_again(worker):
    lease = timezone.now() + timedelta(minutes=5)
    step = _lone_step(status=Status.RUNNING, attempts=1, claimed_by="busy-worker:1", lease_expires_at=lease)

    result = run_step.delay(step.pk)
    time.sleep(1)
    assert not result.ready()  # the canvas must not move on while the step is still running
    # The first worker finishes the step.
    AgentStep.objects.filter(pk=step.pk).update(status=Status.SUCCEEDED, output={"by": "busy-worker:1"},
                                                lease_expires_at=None)
    result.get(timeout=TASK_TIMEOUT)

    step.refresh_from_db()
    assert (step.status, step.attempts, step.output) == (Status.SUCCEEDED, 1, {"by": "busy-worker:1"})


def test_a_step_whose_worker_died_is_re_claimed_when_its_lease_runs_out(worker):
    lease = timezone.now() + timedelta(seconds=1)
    step = _lone_step(status=Status.RUNNING, attempts=1, claimed_by="dead-worker:1", lease_expires_at=lease)

    run_step.delay(step.pk).get(timeout=TASK_TIMEOUT)

    step.refresh_from_db()
    assert (step.status, step.attempts) == (Status.SUCCEEDED, 2)
    assert step.claimed_by != "dead-worker:1" and step.output["pong"] is True


def test_a_redelivered_failed_step_stops_the_canvas_again(worker):
    step = _lone_step(status=Status.FAILED, attempts=1, claimed_by="w:1")
    with pytest.raises(StepNotRunnable):
        run_step.delay(step.pk).get(timeout=TASK_TIMEOUT)
    step.refresh_from_db()
    assert (step.status, step.attempts) == (Status.FAILED, 1)


def test_a_second_claim_on_a_pending_step_gets_nothing():
    step = _lone_step()

    first = step_claim(step_id=step.pk, worker="worker-a:1")
    second = step_claim(step_id=step.pk, worker="worker-b:2")

    assert first is not None and second is None
    step.refresh_from_db()
    assert (step.status, step.attempts, step.claimed_by) == (Status.RUNNING, 1, "worker-a:1")
    assert step.lease_expires_at > timezone.now()


def test_a_task_for_a_step_that_is_gone_returns_quietly(worker):
    step = _lone_step()
    step_id = step.pk
    step.run.delete()

    assert run_step.delay(step_id).get(timeout=TASK_TIMEOUT) is None
    assert not AgentStep.objects.filter(pk=step_id).exists()


def test_a_failing_agent_fails_its_step_and_the_run(worker, failing_workflow):
    run = run_wait(run_id=workflow_start(name=failing_workflow).pk, timeout=TASK_TIMEOUT)

    assert run.status == Status.FAILED
    assert "step boom (test_failing) failed" in run.error
    assert "RuntimeError: the outside service said no" in run.error
    boom = run.steps.get(key="boom")
    assert (boom.status, boom.attempts, boom.output) == (Status.FAILED, 1, {})
    assert "RuntimeError: the outside service said no" in boom.error and "Traceback" in boom.error
    # The chain stops at the failed group: finish never ran.
    assert run.steps.get(key="finish").status == Status.PENDING
    assert run.steps.get(key="start").status == Status.SUCCEEDED
