"""The agent registry, the agents' system users, and the rule that agents imports no domain app."""

import ast
from pathlib import Path

import pytest
from django.conf import settings

from agents.identity import agent_user
from agents.registry import Agent, AgentNotFound, get_agent, register, registered_agents

DOMAIN_APPS = {"studies", "queries", "sdv", "deviations"}


def test_the_ping_agent_is_discovered_from_agents_py():
    ping = get_agent("ping")

    assert (ping.name, ping.queue) == ("ping", "default")
    assert type(ping).__module__ == "agents.agents"
    assert ping in registered_agents()


def test_an_unknown_agent_is_a_clear_error():
    with pytest.raises(AgentNotFound, match="No agent named 'nope'"):
        get_agent("nope")


def test_an_agent_must_name_a_known_queue():
    class GpuAgent(Agent):
        name = "test_gpu"
        queue = "gpu"

    with pytest.raises(ValueError, match="queue 'gpu'"):
        register(GpuAgent)


def test_two_agents_cannot_share_a_name():
    class AnotherPing(Agent):
        name = "ping"

    with pytest.raises(ValueError, match="already registered"):
        register(AnotherPing)
    assert type(get_agent("ping")).__name__ == "PingAgent"


@pytest.mark.django_db
def test_an_agent_acts_as_a_system_user_that_cannot_log_in(client):
    user = agent_user("ping")

    assert user.username == "agent.ping"
    assert not user.has_usable_password()
    assert agent_user("ping").pk == user.pk  # the same user every time
    assert not client.login(username="agent.ping", password="")


def test_the_agents_app_imports_no_domain_app():
    imported = set()
    for source in (Path(settings.BASE_DIR) / "agents").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported.update((alias.name.split(".")[0], source.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add((node.module.split(".")[0], source.name))

    assert {(module, name) for module, name in imported if module in DOMAIN_APPS} == set()
