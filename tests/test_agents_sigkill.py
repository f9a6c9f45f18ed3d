"""A worker killed with SIGKILL in the middle of a step: the run still completes, once.

Real processes on a real broker: `celery worker` subprocesses on Redis and the pytest PostgreSQL
test database (SQLite in memory cannot be shared between processes). Worker A takes the slow
`sleep` step, which writes its output row (a `sleep.done` event) and sleeps; A and its pool child
are killed with SIGKILL. Worker B starts; once the step's lease has expired, the sweeper
(agents.steps_reclaim_expired) resumes the run, B re-claims the step and the run succeeds, with
the step's output row committed exactly once and attempts = 2.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents.models import AgentStep, Event, Status
from agents.orchestrator import workflow_start
from agents.services import workflow_definition_save
from agents.tasks import steps_reclaim_expired
from agents.worker import run_wait
from tests.conftest import skip_or_fail

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
LEASE_SECONDS = 6  # the worker processes' lease: longer than their hard time limit (5 s)
SLEEP_SECONDS = 3

WORKFLOW = f"""
name: test_sigkill
version: 1
steps:
  - {{key: nap, agent: sleep, config: {{seconds: {SLEEP_SECONDS}}}}}
  - {{key: done, agent: ping, after: [nap]}}
"""


@pytest.fixture
def services():
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        skip_or_fail(
            "the SIGKILL test needs PostgreSQL (DATABASE_URL) and Redis (REDIS_URL) shared by worker processes",
            required_by="TRIALOPS_REQUIRE_SERVICES",
        )


@pytest.fixture
def start_worker(tmp_path):
    """Start `celery worker` processes on the test database; kill whatever is left at the end."""
    started: list[subprocess.Popen] = []
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        # pytest-django's test database (test_<name>), not the one DATABASE_URL names.
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "AGENT_STEP_LEASE_SECONDS": str(LEASE_SECONDS),
        "CELERY_TASK_TIME_LIMIT": str(LEASE_SECONDS - 1),
        "CELERY_TASK_SOFT_TIME_LIMIT": str(LEASE_SECONDS - 2),
    }
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]

    def start(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        command = [
            str(Path(sys.executable).parent / "celery"), "-A", "config.celery_app", "worker",
            "-Q", "default,ocr,llm", "-c", "1", "--pool=prefork", "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--loglevel=INFO",
        ]  # fmt: skip
        # A session of its own, so SIGKILL can take the whole process group (main process and pool child).
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    _forget_unacked_messages()


def _forget_unacked_messages() -> None:
    # The killed worker's message stays "unacknowledged" in Redis and would be redelivered an hour
    # later, to whichever test database is then in use. The test Redis database is ours: drop it.
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete("unacked", "unacked_index")
    client.close()


def _wait_for(condition, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_run_whose_worker_is_killed_mid_step_completes_once_on_another_worker(services, start_worker, tmp_path):
    workflow_definition_save(source=WORKFLOW)
    first = start_worker("sigkill_a")
    run = workflow_start(name="test_sigkill")
    nap = run.steps.get(key="nap")

    _wait_for(
        lambda: AgentStep.objects.filter(pk=nap.pk, status=Status.RUNNING).exists(),
        timeout=60,
        what=f"worker A to claim the step; its log:\n{_tail(tmp_path / 'sigkill_a.log')}",
    )
    time.sleep(1)  # in the middle of the step: its output row is written, not committed
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)

    nap.refresh_from_db()
    assert nap.status == Status.RUNNING and nap.attempts == 1
    assert not Event.objects.filter(type="sleep.done").exists()  # the killed work was rolled back

    start_worker("sigkill_b")
    lease_left = (nap.lease_expires_at - timezone.now()).total_seconds()
    time.sleep(max(0, lease_left) + 0.5)
    assert steps_reclaim_expired() == 1  # what celery beat runs every AGENT_STEP_SWEEP_SECONDS
    assert steps_reclaim_expired() == 0  # a second sweep finds nothing more to resume

    run = run_wait(run_id=run.pk, timeout=60)

    assert run.status == Status.SUCCEEDED, f"{run.error}\n{_tail(tmp_path / 'sigkill_b.log')}"
    assert run.steps_done == run.steps_total == 2
    nap.refresh_from_db()
    assert nap.status == Status.SUCCEEDED
    assert nap.attempts == 2  # the re-claim after the lease
    assert nap.claimed_by.startswith("sigkill_b@")
    outputs = Event.objects.filter(type="sleep.done", source_step=nap)
    assert outputs.count() == 1  # the work committed exactly once
    assert nap.output == {"slept": SLEEP_SECONDS, "event_id": outputs.get().pk, "attempt": 2}
    assert run.steps.get(key="done").attempts == 1


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"
