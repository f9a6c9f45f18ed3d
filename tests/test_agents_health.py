"""Agent health from the step ledger, the broker and worker heartbeats; and its place in /ready."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from agents.health import agent_health, agent_health_all
from agents.models import AgentRun, AgentStep, Status
from agents.tasks import heartbeat_record

pytestmark = pytest.mark.django_db


def _steps(agent: str, *durations_ms: int, status=Status.SUCCEEDED, finished_ago=timedelta(minutes=1)):
    run = AgentRun.objects.create(workflow=f"w{AgentRun.objects.count()}", status=Status.SUCCEEDED)
    finished = timezone.now() - finished_ago
    AgentStep.objects.bulk_create(
        AgentStep(
            run=run, key=f"s{n}", agent=agent, agent_version="1", status=status,
            started_at=finished - timedelta(seconds=n, milliseconds=ms), finished_at=finished - timedelta(seconds=n),
        )
        for n, ms in enumerate(durations_ms)
    )  # fmt: skip
    return finished


def test_health_has_last_outcomes_failure_rate_and_duration_percentiles():
    succeeded_at = _steps("ping", 100, 200, 300, 400)
    failed_at = _steps("ping", 500, status=Status.FAILED, finished_ago=timedelta(hours=1))
    _steps("ping", 10_000, finished_ago=timedelta(days=8))  # outside the window

    health = agent_health("ping")

    assert health["runs"] == 5
    assert health["failure_rate"] == 0.2
    assert health["p50_ms"] == pytest.approx(300, abs=1)
    assert health["p95_ms"] == pytest.approx(480, abs=1)  # interpolated, as percentile_cont does
    assert health["last_success_at"] == succeeded_at
    assert health["last_failure_at"] == failed_at
    assert health["queue"] == "default"


def test_an_agent_without_recent_steps_has_empty_health():
    health = agent_health_all()["sleep"]

    assert health["runs"] == 0
    assert health["failure_rate"] is health["p50_ms"] is health["last_success_at"] is None


def test_queue_depth_is_unknown_on_the_in_memory_broker_and_counted_on_redis():
    depth = agent_health("ping")["queue_depth"]

    if settings.REDIS_URL:
        assert isinstance(depth, int) and depth >= 0
    else:
        assert depth is None


def test_the_last_heartbeat_of_a_worker_on_the_agents_queue_is_shown():
    heartbeat_record(hostname="w1@host", queues=["default", "ocr"])
    heartbeat_record(hostname="w2@host", queues=["llm"])

    health = agent_health_all()

    assert health["ping"]["last_heartbeat_at"] is not None
    assert health["ping"]["last_heartbeat_at"] <= timezone.now()


def test_ready_reports_agent_health_without_failing_on_it(client):
    _steps("ping", 100, status=Status.FAILED)

    response = client.get("/ready")

    agents = response.json()["agents"]
    assert agents["ok"] is True
    assert agents["agents"]["ping"]["failure_rate"] == 1.0
    if not settings.REDIS_URL:  # with Redis, readiness depends on a worker answering
        assert response.status_code == 200
