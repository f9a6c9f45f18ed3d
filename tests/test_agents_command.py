"""`manage.py run_workflow`: starts a real worker in this process when none is running (the
`make demo` case), waits for the run and exits non-zero when it failed or timed out."""

import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import AgentRun, Status
from agents.orchestrator import WORKFLOWS
from agents.registry import Agent, register, unregister

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


class NappingAgent(Agent):
    name = "test_napping"

    def run(self, *, step) -> dict:
        time.sleep(2)
        return {}


class FailingAgent(Agent):
    name = "test_failing_cmd"

    def run(self, *, step) -> dict:
        raise ValueError("no source document for this visit")


@pytest.fixture
def test_workflows(monkeypatch):
    register(NappingAgent)
    register(FailingAgent)
    monkeypatch.setitem(WORKFLOWS, "test_nap", [("nap", "test_napping")])
    monkeypatch.setitem(WORKFLOWS, "test_fail", [("start", "ping"), ("boom", "test_failing_cmd")])
    yield
    unregister(NappingAgent.name)
    unregister(FailingAgent.name)


def test_it_runs_the_ping_workflow_and_prints_a_summary():
    out = StringIO()

    call_command("run_workflow", "ping", "--study", "42", stdout=out)

    run = AgentRun.objects.get()
    assert (run.status, run.steps_done, run.study_id, run.trigger) == (Status.SUCCEEDED, 4, 42, "manual")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("workers: ")
    assert lines[-1].startswith(f"run {run.pk}: ping succeeded, 4/4 steps in ")


def test_it_fails_with_the_error_of_a_failed_run(test_workflows):
    with pytest.raises(CommandError, match="test_fail failed, 1/2 steps") as raised:
        call_command("run_workflow", "test_fail", stdout=StringIO())

    assert "ValueError: no source document for this visit" in str(raised.value)
    assert AgentRun.objects.get().status == Status.FAILED


def test_it_fails_when_the_run_does_not_finish_in_time(test_workflows):
    with pytest.raises(CommandError, match=r"timed out after 0\.5s"):
        call_command("run_workflow", "test_nap", "--timeout", "0.5", stdout=StringIO())

    # The worker finished the step it had started before it stopped.
    assert AgentRun.objects.get().steps.get().status == Status.SUCCEEDED


def test_it_rejects_an_unknown_workflow():
    with pytest.raises(CommandError, match="No workflow named 'nope'"):
        call_command("run_workflow", "nope", stdout=StringIO())
