"""`manage.py run_workflow`: starts a real worker in this process when none is running (the
`make demo` case), waits for the run and exits non-zero when it failed or timed out."""

import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import AgentRun, Status
from agents.registry import Agent, register, unregister
from agents.services import workflow_definition_save

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
def test_workflows():
    register(NappingAgent)
    register(FailingAgent)
    workflow_definition_save(source="name: test_nap\nversion: 1\nsteps: [{key: nap, agent: test_napping}]\n")
    workflow_definition_save(
        source="name: test_fail\nversion: 1\nsteps:\n"
        "  - {key: start, agent: ping}\n  - {key: boom, agent: test_failing_cmd, after: [start]}\n"
    )
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


def test_it_runs_a_workflow_defined_in_yaml_with_a_progress_bar():
    out = StringIO()

    call_command("run_workflow", "demo", "--study", "3", stdout=out)

    run = AgentRun.objects.get()
    assert (run.status, run.steps_done, run.study_id, run.definition.version) == (Status.SUCCEEDED, 4, 3, 1)
    bars = [line for line in out.getvalue().splitlines() if line.startswith("  [")]
    assert bars and bars[-1] == "  [" + "#" * 30 + "] 4/4 succeeded"
    assert out.getvalue().splitlines()[-1].startswith(f"run {run.pk}: demo succeeded, 4/4 steps in ")


def test_run_agent_runs_one_agent_as_a_one_step_run():
    out = StringIO()

    call_command("run_agent", "ping", "--study", "8", "--config", '{"depth": 1}', stdout=out)

    run = AgentRun.objects.get()
    assert (run.workflow, run.status, run.steps_total, run.study_id, run.definition) == (
        "agent.ping", Status.SUCCEEDED, 1, 8, None
    )
    step = run.steps.get()
    assert (step.key, step.agent, step.input) == ("ping", "ping", {"config": {"depth": 1}, "study_id": 8})
    assert out.getvalue().splitlines()[-1].startswith(f"run {run.pk}: agent.ping succeeded, 1/1 steps in ")


def test_run_agent_fails_when_the_agent_fails(test_workflows):
    with pytest.raises(CommandError, match="agent.test_failing_cmd failed, 0/1 steps"):
        call_command("run_agent", "test_failing_cmd", stdout=StringIO())


def test_run_agent_rejects_an_unknown_agent():
    with pytest.raises(CommandError, match="No agent named 'nope'"):
        call_command("run_agent", "nope", stdout=StringIO())


def test_list_agents_prints_the_registry():
    out = StringIO()

    call_command("list_agents", stdout=out)

    header, *rows = out.getvalue().splitlines()
    assert header.split() == ["NAME", "VERSION", "QUEUE", "DESCRIPTION"]
    ping = next(row for row in rows if row.startswith("ping "))
    assert ping.split()[:3] == ["ping", "1", "default"] and "Answers pong" in ping
