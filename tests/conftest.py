import os
import shutil
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


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).parent / "screenshots"


@pytest.fixture
def browser_page(monkeypatch):
    """A Playwright page in Debian's /usr/bin/chromium, for the browser tests (with live_server)."""
    from django.db import connections
    from playwright.sync_api import sync_playwright  # only the browser tests pay for the import

    if not CHROMIUM.exists():
        skip_or_fail(f"Chromium not found at {CHROMIUM}", required_by="TRIALOPS_REQUIRE_SERVICES")
    # Playwright's sync API runs an event loop in this thread; Django's ORM calls made by the test
    # itself (setup, assertions) would otherwise be refused as "async unsafe".
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(10_000)
            yield page
        finally:
            browser.close()
            # Code inside sync_playwright() runs in a greenlet with its own contextvars, so the ORM
            # calls made there opened their own connection: close it, or PostgreSQL refuses to drop
            # the test database ("being accessed by other users").
            connections.close_all()


@pytest.fixture
def media(settings, tmp_path):
    """A MEDIA_ROOT of the test's own (source documents), so stored files can be counted and
    nothing is left behind."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    yield root
    shutil.rmtree(root, ignore_errors=True)
