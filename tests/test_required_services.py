"""CI runs the suite against the production services (TRIALOPS_REQUIRE_SERVICES=1): these tests
fail there if the run silently fell back to SQLite or the in-memory broker. Elsewhere a missing
service skips them, with the reason (tests/conftest.py skip_or_fail)."""

import pytest
import redis
from django.conf import settings
from django.db import connection

from config.celery_app import app
from tests.conftest import skip_or_fail

REQUIRED_BY = "TRIALOPS_REQUIRE_SERVICES"


@pytest.mark.django_db
def test_the_database_is_postgresql():
    if connection.vendor != "postgresql":
        skip_or_fail(f"the default database is {connection.vendor}, not PostgreSQL", required_by=REQUIRED_BY)

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        assert int(cursor.fetchone()[0]) >= 150000, "PostgreSQL 15 or newer is required"


def test_redis_answers_ping():
    if not settings.REDIS_URL:
        skip_or_fail("REDIS_URL is not set", required_by=REQUIRED_BY)

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_the_celery_broker_is_redis():
    if not app.conf.broker_url.startswith(("redis://", "rediss://")):
        skip_or_fail(f"the Celery broker is {app.conf.broker_url}, not Redis", required_by=REQUIRED_BY)

    assert app.conf.result_backend.startswith(("redis://", "rediss://")), app.conf.result_backend
    assert app.conf.task_always_eager is False
