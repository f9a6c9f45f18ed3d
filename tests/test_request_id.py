"""One request id from the HTTP request to the logs of every task it caused, on a real worker.

django-structlog's RequestMiddleware binds request_id; its before_task_publish receiver copies the
bound context into the task headers; its worker step binds it again before the task runs, and a
task that enqueues the next step of the canvas passes it on.
"""

import logging

import pytest
import structlog
from celery.signals import before_task_publish
from django.http import JsonResponse
from django.urls import path

from agents.models import AgentRun, Status
from agents.orchestrator import workflow_start
from agents.worker import run_wait

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def start_ping(request):
    run = workflow_start(name="ping")
    # The id RequestMiddleware bound for this request (a new uuid: upstream ids are not trusted).
    request_id = structlog.contextvars.get_contextvars()["request_id"]
    return JsonResponse({"run": run.pk, "request_id": request_id}, status=202)


# This module is its own URLconf for the test below (@pytest.mark.urls).
urlpatterns = [path("test/start-ping", start_ping)]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.INFO)
        self.events: list[dict] = []

    def emit(self, record):
        if isinstance(record.msg, dict):  # structlog hands its event dict to stdlib logging
            self.events.append(record.msg)


@pytest.fixture
def task_side_events(worker):
    """Events logged by agents.services inside the tasks (attached after the worker has started,
    since starting a worker re-applies the logging configuration)."""
    logger = logging.getLogger("agents.services")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.events
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def published_headers():
    headers_seen: list[dict] = []

    def remember(headers=None, **kwargs):
        headers_seen.append(dict(headers or {}))

    before_task_publish.connect(remember, weak=False)
    yield headers_seen
    before_task_publish.disconnect(remember)


@pytest.mark.urls("tests.test_request_id")
def test_a_request_id_reaches_the_logs_of_every_step_on_the_worker(client, task_side_events, published_headers):
    response = client.post("/test/start-ping")
    assert response.status_code == 202
    request_id = response.json()["request_id"]

    run = run_wait(run_id=response.json()["run"], timeout=30)

    assert run.status == Status.SUCCEEDED, run.error
    assert run.request_id == request_id
    # Published with the request's context: the first step by the web request, the rest by the worker.
    contexts = [h["__django_structlog__"] for h in published_headers if h.get("task") == "agents.run_step"]
    assert len(contexts) == 4
    assert all(context["request_id"] == request_id for context in contexts)
    # Logged inside the tasks, on the worker thread, with the request id bound.
    finished = [e for e in task_side_events if e["event"] == "agent_step_succeeded"]
    assert sorted(e["key"] for e in finished) == ["finish", "ping_a", "ping_b", "start"]
    assert all(e["request_id"] == request_id and e["task_id"] for e in finished)


def test_a_run_started_outside_a_request_has_no_request_id(worker):
    structlog.contextvars.clear_contextvars()

    run = run_wait(run_id=workflow_start(name="ping").pk, timeout=30)

    assert run.status == Status.SUCCEEDED
    assert AgentRun.objects.get(pk=run.pk).request_id == ""
