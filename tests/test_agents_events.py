"""Events between agents: a published event starts its subscribed workflows once, on a real worker."""

import time

import pytest
from django.db import transaction

from agents.events import event_dispatch, event_publish
from agents.models import AgentRun, Event, Status
from agents.services import workflow_definition_save
from agents.worker import run_wait

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SUBSCRIBER = """
name: test_on_event
version: 1
triggers: [manual, {on_event: test.happened}]
steps:
  - {key: react, agent: ping}
"""


def _wait_for_run(timeout: float = 30) -> AgentRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = AgentRun.objects.filter(workflow="test_on_event").first()
        if run is not None:
            return run
        time.sleep(0.1)
    raise AssertionError("the subscribed workflow did not start")


def test_publishing_an_event_starts_the_subscribed_workflow_once(worker):
    workflow_definition_save(source=SUBSCRIBER)

    with transaction.atomic():  # dispatched after commit, never from inside the transaction
        event = event_publish(type="test.happened", study_id=5, payload={"n": 1})
        assert not AgentRun.objects.exists()

    run = run_wait(run_id=_wait_for_run().pk, timeout=30)
    assert run.status == Status.SUCCEEDED, run.error
    assert (run.trigger, run.study_id) == (AgentRun.Trigger.EVENT, 5)
    event.refresh_from_db()
    assert event.processed_at is not None and event.started_runs == [run.pk]

    assert event_dispatch(event_id=event.pk) == []  # a redelivered dispatch does nothing
    assert AgentRun.objects.filter(workflow="test_on_event").count() == 1


def test_an_event_nobody_subscribes_to_is_stored_and_processed(worker):
    workflow_definition_save(source=SUBSCRIBER)

    event = event_publish(type="test.ignored", study_id=5, payload={})

    deadline = time.monotonic() + 30
    while Event.objects.get(pk=event.pk).processed_at is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Event.objects.get(pk=event.pk).processed_at is not None
    assert not AgentRun.objects.exists()
