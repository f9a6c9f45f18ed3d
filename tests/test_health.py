"""/health says the process is up; /ready says whether the database (and, with a broker, a worker)
can do the work. Failures are produced outside our code: a database that refuses connections."""

import pytest
from django.conf import settings
from django.db import connections
from django.db.utils import load_backend

from agents.worker import in_process_worker
from config.celery_app import app


@pytest.fixture
def unreachable_database():
    """Point the default connection of this thread at a database that cannot be opened: a closed
    port for PostgreSQL, a file in a missing directory for SQLite."""
    original = connections["default"]
    broken_settings = {**original.settings_dict, "HOST": "127.0.0.1", "PORT": "1"}
    if original.vendor == "sqlite":
        broken_settings["NAME"] = "/nonexistent-trialops-dir/db.sqlite3"
    backend = load_backend(broken_settings["ENGINE"])
    connections["default"] = backend.DatabaseWrapper(broken_settings, "default")
    try:
        yield
    finally:
        connections["default"].close()
        connections["default"] = original


def test_health_answers_without_touching_the_database(client):
    # No django_db mark: pytest-django would fail any query this makes.
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_reports_every_check_ok(client):
    if settings.REDIS_URL:
        pytest.skip("with a broker /ready also needs a worker; see test_ready_reports_the_workers_answering")

    response = client.get("/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"] == {"ok": True, "mode": "in-process"}


@pytest.mark.django_db
def test_ready_answers_503_when_the_database_is_unreachable(client, unreachable_database):
    response = client.get("/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is False
    assert "OperationalError" in body["checks"]["database"]["error"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_ready_reports_the_workers_answering(client):
    if not settings.REDIS_URL:
        pytest.skip("embedded mode has no broker to ping (REDIS_URL not set)")

    with in_process_worker(app) as worker:
        response = client.get("/ready")

    assert response.status_code == 200, response.json()
    broker = response.json()["checks"]["broker"]
    assert broker["ok"] is True and broker["mode"] == "redis"
    assert worker.hostname in broker["workers"]


@pytest.mark.django_db
def test_ready_answers_503_when_no_worker_answers(client):
    if not settings.REDIS_URL:
        pytest.skip("embedded mode has no broker to ping (REDIS_URL not set)")
    if app.control.ping(timeout=1.0):
        pytest.skip("a worker is running against this Redis; cannot observe 'no worker'")

    response = client.get("/ready")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {
        "ok": False,
        "mode": "redis",
        "error": "no worker answered a ping within 1s",
        "workers": [],
    }
