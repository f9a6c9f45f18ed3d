"""Schedule triggers: a built-in definition's `schedule` becomes a celery beat entry, and the
entry's task starts the workflow on a real worker."""

import time

import pytest

from agents.models import AgentRun, Status
from agents.tasks import workflow_start_scheduled
from config.celery_app import app


def test_a_schedule_trigger_becomes_a_beat_entry():
    entry = app.conf.beat_schedule["workflow ping"]
    assert entry["task"] == "agents.workflow_start_scheduled"
    assert entry["args"] == ("ping",)
    assert entry["schedule"] == 3600


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_beat_task_starts_the_workflow_on_a_worker(worker):
    workflow_start_scheduled.delay("ping").get(timeout=30)
    deadline = time.monotonic() + 30
    run = AgentRun.objects.get(workflow="ping")
    while run.status not in (Status.SUCCEEDED, Status.FAILED) and time.monotonic() < deadline:
        time.sleep(0.1)
        run.refresh_from_db()
    assert (run.trigger, run.status, run.steps_done, run.steps_total) == ("schedule", Status.SUCCEEDED, 4, 4)
