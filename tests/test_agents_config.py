"""Per-study agent configuration: validated against the agent's schema, audited, and a paused
agent's workflows refused at start."""

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from agents.models import AgentConfig, AgentRun
from agents.orchestrator import WorkflowCannotStart, workflow_start
from agents.registry import AgentNotFound
from agents.services import agent_config_get, agent_config_set, workflow_definition_save

pytestmark = pytest.mark.django_db

STUDY = 7


@pytest.fixture
def manager():
    return get_user_model().objects.create_user(username="dm", password="x")


def test_a_valid_config_is_stored_and_audited_with_its_actor(manager):
    agent_config_set(agent="sleep", study_id=STUDY, config={"seconds": 2}, enabled=True, actor=manager)
    agent_config_set(agent="sleep", study_id=STUDY, config={"seconds": 3}, enabled=False, actor=manager)

    stored = agent_config_get(agent="sleep", study_id=STUDY)
    assert (stored.config, stored.enabled, stored.updated_by) == ({"seconds": 3}, False, manager)
    history = list(stored.history.order_by("history_date"))
    assert [(h.config, h.enabled, h.history_user, h.history_change_reason) for h in history] == [
        ({"seconds": 2}, True, manager, "enabled"),
        ({"seconds": 3}, False, manager, "paused"),
    ]
    assert AgentConfig.objects.count() == 1


def test_an_invalid_config_is_refused_naming_its_path(manager):
    with pytest.raises(ValidationError) as raised:
        agent_config_set(agent="sleep", study_id=STUDY, config={"seconds": "long"}, enabled=True, actor=manager)

    assert "config.seconds: 'long' is not of type 'number'" in str(raised.value)
    assert not AgentConfig.objects.exists()


def test_an_agent_without_a_stored_config_is_enabled_with_an_empty_one():
    config = agent_config_get(agent="ping", study_id=STUDY)

    assert (config.pk, config.config, config.enabled) == (None, {}, True)


def test_an_unknown_agent_has_no_config():
    with pytest.raises(AgentNotFound):
        agent_config_get(agent="nobody", study_id=STUDY)


def test_a_workflow_using_a_paused_agent_is_refused_at_start(manager):
    workflow_definition_save(source="name: test_paused\nversion: 1\nsteps:\n  - {key: nap, agent: sleep}\n")
    agent_config_set(agent="sleep", study_id=STUDY, config={}, enabled=False, actor=manager)

    with pytest.raises(WorkflowCannotStart, match="agent sleep is paused on study 7"):
        workflow_start(name="test_paused", study_id=STUDY)

    assert not AgentRun.objects.exists()
    # Paused on one study only: another study still starts it (no canvas is sent: not committed).
    assert workflow_start(name="test_paused", study_id=STUDY + 1).steps_total == 1
