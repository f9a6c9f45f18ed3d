"""Workflows from YAML on a real Celery worker (never eager mode): parallel groups, per-site fan-out,
failure and retry from the failed step, transient-error retries, rollback by compensation, cancel,
and the rule that two runs of one workflow on one study never overlap."""

import time

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, OperationalError, transaction

from agents.models import AgentRun, Status, WorkflowDefinition
from agents.orchestrator import (
    run_retry,
    run_rollback,
    study_sites_provider_set,
    workflow_start,
    workflow_trigger,
)
from agents.registry import Agent, register, unregister
from agents.services import (
    RunNotInState,
    TransientStepError,
    WorkflowRunOverlap,
    run_cancel,
    workflow_definition_save,
)
from agents.worker import run_wait

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TIMEOUT = 30
BROKEN_FLAG = "test-flaky-broken"  # while this group exists, the flaky agent fails


class FlakyAgent(Agent):
    name = "test_flaky"
    description = "Fails while its outside service is down (a flag row in the database)."

    def run(self, *, step) -> dict:
        if Group.objects.filter(name=BROKEN_FLAG).exists():
            raise RuntimeError("the outside service is down")
        return {"ok": True}


class NappingAgent(Agent):
    name = "test_nap"

    def run(self, *, step) -> dict:
        time.sleep(step.input["config"].get("seconds", 1.5))
        return {"slept": True}


class BusyOnceAgent(Agent):
    name = "test_busy_once"

    def run(self, *, step) -> dict:
        if step.attempts == 1:
            raise TransientStepError("429 too many requests")
        return {"attempt": step.attempts}


@pytest.fixture(autouse=True)
def test_agents():
    for agent in (FlakyAgent, NappingAgent, BusyOnceAgent):
        register(agent)
    yield
    for agent in (FlakyAgent, NappingAgent, BusyOnceAgent):
        unregister(agent.name)
    study_sites_provider_set(None)


def _define(source: str) -> WorkflowDefinition:
    return workflow_definition_save(source=source)


def _finished(run: AgentRun) -> AgentRun:
    return run_wait(run_id=run.pk, timeout=TIMEOUT)


def _statuses(run: AgentRun) -> dict[str, str]:
    return dict(run.steps.values_list("key", "status"))


def test_the_ping_workflow_runs_from_its_yaml_definition(worker):
    run = _finished(workflow_start(name="ping", study_id=3))

    assert run.status == Status.SUCCEEDED, run.error
    assert (run.steps_done, run.steps_total, run.attempt) == (4, 4, 1)
    assert (run.definition.name, run.definition.version) == ("ping", 1)
    assert [(s.key, s.stage) for s in run.steps.order_by("id")] == [
        ("start", 0), ("ping_a", 1), ("ping_b", 1), ("finish", 2)
    ]
    assert run.steps.get(key="start").input == {"config": {}, "study_id": 3}


def test_the_demo_workflow_runs_its_parallel_group_between_two_steps(worker):
    run = _finished(workflow_start(name="demo"))

    assert run.status == Status.SUCCEEDED, run.error
    prepare, check_a, check_b, publish = run.steps.order_by("id")
    assert finished_before(prepare, check_a) and finished_before(prepare, check_b)
    assert finished_before(check_a, publish) and finished_before(check_b, publish)
    assert prepare.policy == {"max": 2, "backoff": 1, "backoff_max": 10, "time_limit": 120}
    assert check_a.input["config"] == {"check": "ranges"}


def finished_before(first, then) -> bool:
    return first.finished_at <= then.started_at


FLAKY = """
name: test_flaky_flow
version: 1
steps:
  - {key: prepare, agent: ping, on_failure: {agent: ping, config: {undo: prepare}}}
  - {key: load, agent: ping, after: [prepare], on_failure: [{agent: ping, config: {undo: load}}]}
  - {key: side, agent: ping, after: [prepare]}
  - {key: flaky, agent: test_flaky, after: [load, side]}
  - {key: publish, agent: ping, after: [flaky]}
"""


def test_a_failed_run_is_retried_from_the_failed_step(worker):
    _define(FLAKY)
    Group.objects.create(name=BROKEN_FLAG)
    run = _finished(workflow_start(name="test_flaky_flow", study_id=1))
    assert run.status == Status.FAILED and "the outside service is down" in run.error
    assert _statuses(run) == {
        "prepare": "succeeded", "load": "succeeded", "side": "succeeded", "flaky": "failed", "publish": "pending"
    }
    done_before = dict(run.steps.values_list("key", "finished_at"))

    Group.objects.filter(name=BROKEN_FLAG).delete()  # the outside service is back
    run = _finished(run_retry(run_id=run.pk))

    assert run.status == Status.SUCCEEDED, run.error
    assert (run.attempt, run.steps_done, run.error) == (2, 5, "")
    flaky = run.steps.get(key="flaky")
    assert (flaky.status, flaky.attempts, flaky.error) == (Status.SUCCEEDED, 2, "")
    # The steps that had succeeded did not run again.
    for key in ("prepare", "load", "side"):
        step = run.steps.get(key=key)
        assert (step.attempts, step.finished_at) == (1, done_before[key])


def test_a_rollback_runs_the_compensation_steps_in_reverse_order(worker):
    _define(FLAKY)
    Group.objects.create(name=BROKEN_FLAG)
    run = _finished(workflow_start(name="test_flaky_flow"))
    assert run.status == Status.FAILED

    run = _finished(run_rollback(run_id=run.pk))

    assert run.status == Status.COMPENSATED, run.error
    undo = list(run.steps.exclude(compensates=None).order_by("started_at"))
    assert [(s.key, s.compensates.key, s.status) for s in undo] == [
        ("load.undo", "load", "succeeded"), ("prepare.undo", "prepare", "succeeded")
    ]
    assert undo[0].finished_at <= undo[1].started_at
    assert undo[0].input["config"] == {"undo": "load"} and undo[0].input["undoes"]["pong"] is True
    # Steps with a compensation are undone; "side" declared none and stays as it was.
    assert _statuses(run) | {"load.undo": "-", "prepare.undo": "-"} == {
        "prepare": "compensated", "load": "compensated", "side": "succeeded", "flaky": "failed",
        "publish": "pending", "load.undo": "-", "prepare.undo": "-",
    }
    with pytest.raises(RunNotInState, match="only a failed or cancelled run"):
        run_retry(run_id=run.pk)


def test_a_transient_error_is_retried_by_the_step_policy_and_others_are_not(worker):
    _define(
        "name: test_busy\nversion: 1\nsteps:\n"
        "  - {key: call, agent: test_busy_once, retries: {max: 2, backoff: 0.1, backoff_max: 0.2}}\n"
        "  - {key: after, agent: test_flaky, after: [call], retries: 3}\n"
    )
    Group.objects.create(name=BROKEN_FLAG)

    run = _finished(workflow_start(name="test_busy"))

    call = run.steps.get(key="call")
    assert (call.status, call.attempts, call.output) == (Status.SUCCEEDED, 2, {"attempt": 2})
    flaky = run.steps.get(key="after")  # a RuntimeError is not transient: no retry despite retries: 3
    assert (flaky.status, flaky.attempts) == (Status.FAILED, 1)
    assert run.status == Status.FAILED


def test_cancel_lets_the_running_step_finish_but_starts_no_further_stage(worker):
    _define(
        "name: test_cancel\nversion: 1\nsteps:\n"
        "  - {key: slow, agent: test_nap, config: {seconds: 1.5}}\n"
        "  - {key: next, agent: ping, after: [slow]}\n"
    )
    run = workflow_start(name="test_cancel", study_id=5)
    _wait_for(lambda: run.steps.get(key="slow").status == Status.RUNNING)

    run_cancel(run_id=run.pk)
    _wait_for(lambda: run.steps.get(key="slow").status != Status.RUNNING)
    time.sleep(0.5)  # time enough for a next stage to start, if it wrongly did

    run.refresh_from_db()
    assert (run.status, run.steps_done) == (Status.CANCELLED, 1)
    assert _statuses(run) == {"slow": "succeeded", "next": "cancelled"}
    assert run.steps.get(key="next").attempts == 0


def test_a_step_fans_out_to_one_step_per_site_of_the_study(worker):
    study_sites_provider_set(lambda study_id: {7: [71, 72, 73]}[study_id])
    _define(
        "name: test_sites\nversion: 1\nsteps:\n"
        "  - {key: plan, agent: ping}\n"
        "  - {key: visit, agent: ping, after: [plan], fan_out: sites, config: {kind: sdv}}\n"
        "  - {key: report, agent: ping, after: [visit]}\n"
    )

    run = _finished(workflow_start(name="test_sites", study_id=7))

    assert run.status == Status.SUCCEEDED, run.error
    assert run.steps_total == run.steps_done == 5
    visits = run.steps.filter(key__startswith="visit@").order_by("id")
    assert [(s.key, s.stage, s.input) for s in visits] == [
        (f"visit@{site}", 1, {"config": {"kind": "sdv"}, "study_id": 7, "site_id": site}) for site in (71, 72, 73)
    ]
    report = run.steps.get(key="report")
    assert all(v.finished_at <= report.started_at for v in visits)


def test_a_second_run_of_a_workflow_on_the_same_study_is_refused_while_the_first_is_active(worker):
    _define("name: test_overlap\nversion: 1\nsteps: [{key: slow, agent: test_nap, config: {seconds: 1}}]\n")
    first = workflow_start(name="test_overlap", study_id=9)

    with pytest.raises(WorkflowRunOverlap, match=f"test_overlap is already active on study 9: run {first.pk}"):
        workflow_start(name="test_overlap", study_id=9)
    other_study = workflow_start(name="test_overlap", study_id=10)

    assert _finished(first).status == _finished(other_study).status == Status.SUCCEEDED
    assert _finished(workflow_start(name="test_overlap", study_id=9)).status == Status.SUCCEEDED
    assert AgentRun.objects.filter(workflow="test_overlap").count() == 3


def test_the_overlap_rule_is_a_database_constraint_not_a_check():
    AgentRun.objects.create(workflow="ping", study_id=4, status=Status.RUNNING)
    AgentRun.objects.create(workflow="ping", study_id=4, status=Status.FAILED)  # finished runs do not count

    with pytest.raises(IntegrityError), transaction.atomic():
        AgentRun.objects.create(workflow="ping", study_id=4, status=Status.PENDING)


def test_a_run_records_the_definition_version_it_ran(worker):
    _define("name: test_versions\nversion: 1\nsteps: [{key: a, agent: ping}]\n")
    first = _finished(workflow_start(name="test_versions"))
    _define("name: test_versions\nversion: 2\nsteps: [{key: a, agent: ping}, {key: b, agent: ping, after: [a]}]\n")

    second = _finished(workflow_start(name="test_versions"))
    older = _finished(workflow_start(name="test_versions", version=1))

    assert [(r.definition.version, r.steps_total, r.status) for r in (first, second, older)] == [
        (1, 1, "succeeded"), (2, 2, "succeeded"), (1, 1, "succeeded")
    ]


def test_an_event_starts_the_workflows_that_declare_it(worker):
    _define("name: test_on_event\nversion: 1\ntriggers: [{on_event: risk.changed}]\nsteps: [{key: a, agent: ping}]\n")

    runs = workflow_trigger(trigger="event", event_type="risk.changed", study_id=2)

    assert [(r.workflow, r.trigger, r.study_id) for r in runs] == [("test_on_event", "event", 2)]
    assert _finished(runs[0]).status == Status.SUCCEEDED
    assert workflow_trigger(trigger="event", event_type="discrepancies.found", study_id=2) == []


def _wait_for(condition, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OperationalError:
            pass  # SQLite: the worker thread holds the table lock for a moment; read again
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
