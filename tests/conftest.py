import os
from pathlib import Path

import pytest
from django.conf import settings


def _required(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def skip_or_fail(reason: str, *, required_by: str) -> None:
    """Skip a test whose outside prerequisite is missing, unless the environment says it is
    required (CI), in which case the test fails with the same reason."""
    if _required(required_by):
        pytest.fail(f"{reason} (required because {required_by} is set)")
    pytest.skip(reason)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data: real third-party files; present in CI, absent in a user's clone."""
    path = Path(settings.SHARED_DATA_DIR)
    if not path.is_dir():
        skip_or_fail(f"shared data not found at {path}", required_by="TRIALOPS_REQUIRE_SHARED_DATA")
    return path


@pytest.fixture(scope="module")
def worker():
    """A real Celery worker (celery.contrib.testing.worker.start_worker) in a thread, consuming every
    queue, on the configured broker (in-memory, or Redis when REDIS_URL is set). Never eager mode.
    One per module: stopping a worker takes a few seconds. Tests using it need
    @pytest.mark.django_db(transaction=True), since the worker reads committed data only."""
    from agents.worker import in_process_worker
    from config.celery_app import app

    # Tasks queued by earlier tests that had no worker (their runs are gone with their database)
    # must not run against this module's data.
    app.control.purge()
    with in_process_worker(app) as started:
        yield started
