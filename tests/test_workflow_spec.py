"""The workflow definition language: schema and graph checks with line numbers, stages, storing
definitions (immutable once run, a change is a new version), and the built-in definitions."""

import textwrap

import pytest

from agents.models import AgentRun, WorkflowDefinition
from agents.services import WorkflowDefinitionImmutable, workflow_definition_save, workflows_sync
from agents.workflow_spec import WorkflowSpecError, builtin_schedules, spec_parse, stages


def _refusal(source: str) -> WorkflowSpecError:
    with pytest.raises(WorkflowSpecError) as raised:
        spec_parse(textwrap.dedent(source), origin="test.yaml")
    return raised.value


def test_a_step_without_an_agent_is_refused_at_its_line():
    error = _refusal(
        """\
        name: t
        version: 1
        steps:
          - key: a
            agent: ping
          - key: b
            config: {x: 1}
        """
    )
    assert (error.line, error.reason) == (6, "steps/1: 'agent' is a required property")
    assert str(error) == "test.yaml, line 6: steps/1: 'agent' is a required property"


def test_an_unknown_agent_is_refused_at_its_line():
    error = _refusal(
        """\
        name: t
        version: 1
        steps:
          - key: a
            agent: ping
            on_failure:
              - agent: nope
        """
    )
    assert error.line == 7 and error.reason.startswith("No agent named 'nope'")


def test_a_cycle_in_after_is_refused_with_the_steps_in_it():
    error = _refusal(
        """\
        name: t
        version: 1
        steps:
          - {key: a, agent: ping, after: [c]}
          - {key: b, agent: ping, after: [a]}
          - {key: c, agent: ping, after: [b]}
        """
    )
    assert error.line == 4
    assert error.reason.startswith("steps depend on each other in a cycle: ")
    assert set(error.reason.split(": ")[1].split(" -> ")) == {"a", "b", "c"}


def test_after_naming_an_unknown_step_is_refused_at_that_entry():
    error = _refusal(
        """\
        name: t
        version: 1
        steps:
          - key: a
            agent: ping
          - key: b
            agent: ping
            after:
              - a
              - typo
        """
    )
    assert (error.line, error.reason) == (10, "step 'b' runs after 'typo', which is not a step")


def test_bad_yaml_syntax_is_refused_with_its_line():
    error = _refusal("name: t\nversion: 1\nsteps:\n  - key: a\n   agent: ping\n")
    assert error.line == 5 and error.reason.startswith("invalid YAML: ")


def test_a_bad_value_deep_in_the_definition_names_its_path_and_line():
    error = _refusal(
        """\
        name: t
        version: 1
        steps:
          - key: a
            agent: ping
            retries: {max: 99}
        """
    )
    assert error.line == 6 and error.reason.startswith("steps/0/retries")


def test_steps_are_layered_into_stages_by_their_dependencies():
    spec = spec_parse(
        textwrap.dedent(
            """\
            name: t
            version: 1
            triggers: [manual, on_import, {on_event: risk.changed}, {schedule: {every: 3600}}]
            steps:
              - {key: publish, agent: ping, after: [check_a, check_b]}
              - {key: check_a, agent: ping, after: [prepare]}
              - {key: prepare, agent: ping}
              - {key: check_b, agent: ping, after: [prepare], fan_out: sites}
            """
        )
    )
    assert [[s["key"] for s in stage] for stage in stages(spec)] == [["prepare"], ["check_a", "check_b"], ["publish"]]


def test_the_built_in_definitions_are_valid_and_their_schedules_are_known():
    # The ping canary hourly; edit checks and risk nightly (after the night's imports); SLA
    # reminders hourly (a site's morning comes at a different hour everywhere); deviation review weekly;
    # source documents left over every ten minutes
    assert builtin_schedules() == [("data_review", {"cron": "30 2 * * *"}),
                                   ("deviation_review", {"cron": "0 3 * * 1"}), ("ping", {"every": 3600}),
                                   ("query_sla", {"cron": "5 * * * *"}), ("risk_review", {"cron": "0 2 * * *"}),
                                   ("source_verification", {"every": 600})]


@pytest.mark.django_db
def test_syncing_the_built_in_definitions_stores_them_once():
    first = workflows_sync()
    second = workflows_sync()

    assert {(d.name, d.version) for d in first} >= {("ping", 1), ("demo", 1)}
    assert [d.pk for d in first] == [d.pk for d in second]
    ping = WorkflowDefinition.objects.get(name="ping")
    assert ping.source.startswith("# The smallest workflow") and len(ping.checksum) == 64
    assert [s["key"] for s in ping.spec["steps"]] == ["start", "ping_a", "ping_b", "finish"]


V1 = "name: t\nversion: 1\nsteps: [{key: a, agent: ping}]\n"
V1_CHANGED = "name: t\nversion: 1\nsteps: [{key: a, agent: ping}, {key: b, agent: ping, after: [a]}]\n"
V2 = V1_CHANGED.replace("version: 1", "version: 2")


@pytest.mark.django_db
def test_a_definition_without_runs_may_still_change():
    first = workflow_definition_save(source=V1)
    # A comment is not a change of the spec.
    assert workflow_definition_save(source="# same\n" + V1).checksum == first.checksum

    changed = workflow_definition_save(source=V1_CHANGED)

    assert changed.pk == first.pk and changed.checksum != first.checksum
    assert len(WorkflowDefinition.objects.get(pk=first.pk).spec["steps"]) == 2


@pytest.mark.django_db
def test_a_definition_that_has_run_is_immutable_and_a_change_is_a_new_version():
    v1 = workflow_definition_save(source=V1)
    AgentRun.objects.create(workflow="t", definition=v1, status="succeeded")

    with pytest.raises(WorkflowDefinitionImmutable, match="t v1 has runs and cannot change; give .* version 2"):
        workflow_definition_save(source=V1_CHANGED)
    v2 = workflow_definition_save(source=V2)

    v1.refresh_from_db()
    assert len(v1.spec["steps"]) == 1 and v1.source == V1
    assert (v2.version, len(v2.spec["steps"])) == (2, 2)
    assert workflow_definition_save(source=V1).pk == v1.pk  # the unchanged v1 is still accepted
