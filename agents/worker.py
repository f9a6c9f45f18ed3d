"""Running tasks on a real Celery worker when no worker process is running.

Embedded mode (no REDIS_URL) runs the web process's tasks eagerly, but a workflow canvas
(chain, group, chord) must go through a real worker: eager mode does not behave like one
(STYLE.md). `in_process_worker` starts Celery's own embedded worker in a thread of this
process, on the configured broker (the in-memory one in embedded mode, which only this
process can reach), and stops it on exit.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery import Celery
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import OperationalError

from agents.models import AgentRun
from agents.registry import QUEUES

PING_TIMEOUT_SECONDS = 2.0


@contextmanager
def in_process_worker(app: Celery, *, shutdown_timeout: float = 30.0) -> Iterator:
    """A solo-pool worker in a thread, consuming every agent queue; eager mode is off meanwhile."""
    was_eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        # perform_ping_check would need celery's test task registered; start_worker already
        # waits until the consumer is ready.
        with start_worker(
            app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            shutdown_timeout=shutdown_timeout,
            queues=list(QUEUES),
        ) as worker:
            yield worker
    finally:
        app.conf.task_always_eager = was_eager


def workers_answering(app: Celery, timeout: float = PING_TIMEOUT_SECONDS) -> list[str]:
    """Names of the workers that answer a broadcast ping within `timeout` seconds."""
    replies = app.control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


@contextmanager
def worker_available(app: Celery) -> Iterator[list[str]]:
    """Yield the names of workers that will run our tasks: the running ones when the broker is
    Redis and someone answers, else a worker started here for the duration of the block."""
    if not settings.TASKS_IN_PROCESS and settings.REDIS_URL:
        names = workers_answering(app)
        if names:
            yield names
            return
    with in_process_worker(app) as worker:
        yield [worker.hostname]


def run_wait(
    *, run_id: int, timeout: float, on_progress: Callable[[AgentRun], None] | None = None, interval: float = 0.1
) -> AgentRun:
    """Poll the run until it is finished or `timeout` seconds have passed; returns the last state read."""
    deadline = time.monotonic() + timeout
    seen = None
    run = AgentRun.objects.get(pk=run_id)
    while True:
        try:
            run = AgentRun.objects.get(pk=run_id)
        except OperationalError:
            # SQLite: the worker thread may hold the write lock for a moment; read again.
            pass
        state = (run.status, run.steps_done)
        if on_progress is not None and state != seen:
            on_progress(run)
        seen = state
        if run.is_finished or time.monotonic() >= deadline:
            return run
        time.sleep(interval)
