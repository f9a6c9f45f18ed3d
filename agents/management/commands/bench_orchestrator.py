"""Overhead of the orchestrator over bare Celery: `python manage.py bench_orchestrator [--repeat N]`.

Runs a workflow of N no-op steps (`ping`, one after another) and a bare Celery chain of N no-op
tasks on the same broker and worker, alternately, `--repeat` times each after one warm-up of each.
Each is timed from just before it is started to the end of its last step as recorded by the step
itself (AgentRun.finished_at; the last task's return value), so polling does not blur the figures.
The last line printed is JSON: per-step p50/p95 of the workflow, per-step p50 of the bare chain,
and their ratio.
"""

import json
import statistics
import time

from celery import chain
from django.core.management.base import BaseCommand, CommandError

from agents.models import Status
from agents.orchestrator import workflow_start
from agents.services import workflow_definition_save
from agents.tasks import noop
from agents.worker import run_wait, worker_available
from config.celery_app import app

WORKFLOW = "bench_orchestrator"


def bench_definition(steps: int) -> str:
    lines = [f"name: {WORKFLOW}", "version: 1", "description: no-op steps in a row, for bench_orchestrator", "steps:"]
    for number in range(steps):
        after = f", after: [s{number - 1}]" if number else ""
        lines.append(f"  - {{key: s{number}, agent: ping{after}}}")
    return "\n".join(lines) + "\n"


class Command(BaseCommand):
    help = "Measure the orchestrator's per-step overhead against a bare Celery chain on the same worker."

    def add_arguments(self, parser):
        parser.add_argument("--steps", type=int, default=20)
        parser.add_argument("--repeat", type=int, default=7, help="timed runs of each (default 7)")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one run")

    def handle(self, *args, steps: int, repeat: int, timeout: float, **options):
        workflow_definition_save(source=bench_definition(steps), origin="bench_orchestrator")
        workflow_ms, bare_ms = [], []
        with worker_available(app) as workers:
            self.stdout.write(f"workers: {', '.join(workers)}; broker: {app.conf.broker_url.split('://')[0]}")
            self._workflow_ms(steps, timeout), self._bare_ms(steps, timeout)  # warm-up: connections, imports
            for _ in range(repeat):
                workflow_ms.append(self._workflow_ms(steps, timeout))
                bare_ms.append(self._bare_ms(steps, timeout))
                self.stdout.write(f"  workflow {workflow_ms[-1]:.2f} ms/step, bare chain {bare_ms[-1]:.2f} ms/step")
        p50, bare_p50 = statistics.median(workflow_ms), statistics.median(bare_ms)
        result = {
            "bench": "orchestrator",
            "steps": steps,
            "per_step_ms_p50": round(p50, 2),
            "per_step_ms_p95": round(_p95(workflow_ms), 2),
            "bare_celery_ms_p50": round(bare_p50, 2),
            "ratio": round(p50 / bare_p50, 2),
        }
        self.stdout.write(json.dumps(result))

    def _workflow_ms(self, steps: int, timeout: float) -> float:
        started = time.time()
        run = run_wait(run_id=workflow_start(name=WORKFLOW).pk, timeout=timeout, interval=0.1)
        if run.status != Status.SUCCEEDED:
            raise CommandError(f"bench run {run.pk} {run.status}: {run.error or 'timed out'}")
        return (run.finished_at.timestamp() - started) * 1000 / steps

    def _bare_ms(self, steps: int, timeout: float) -> float:
        started = time.time()
        last_ran_at = chain(*[noop.si() for _ in range(steps)]).apply_async().get(timeout=timeout)
        return (last_ran_at - started) * 1000 / steps


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
