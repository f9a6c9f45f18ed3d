"""bench_orchestrator runs on a real worker and prints its JSON line (the figures are not asserted:
a timed test would fail on a busy machine and prove nothing)."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from agents.models import AgentRun, Status

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_it_prints_the_figures_as_its_last_line():
    out = StringIO()

    call_command("bench_orchestrator", "--repeat", "2", stdout=out)

    result = json.loads(out.getvalue().splitlines()[-1])
    assert set(result) == {"bench", "steps", "per_step_ms_p50", "per_step_ms_p95", "bare_celery_ms_p50", "ratio"}
    assert (result["bench"], result["steps"]) == ("orchestrator", 20)
    assert all(result[key] > 0 for key in ("per_step_ms_p50", "per_step_ms_p95", "bare_celery_ms_p50", "ratio"))
    runs = AgentRun.objects.filter(workflow="bench_orchestrator")
    assert runs.count() == 3 and set(runs.values_list("status", flat=True)) == {Status.SUCCEEDED}
    assert all(run.steps_done == 20 for run in runs)
