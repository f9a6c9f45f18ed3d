"""The agent base class and the registry of agents by name.

Each app declares its agents in `<app>/agents.py` with `@register`; AgentsConfig.ready()
imports those modules (as admin does for admin.py), so the registry is complete once Django
has started, in web processes and workers alike.
"""

from jsonschema import Draft202012Validator

QUEUES = ("default", "ocr", "llm")


class TransientStepError(Exception):
    """Raised by an agent when trying again later may work (an outside service is busy or down)."""


class Agent:
    """One unit of work of a workflow. Subclasses set the class attributes and implement run().

    Retry policy and time limits are the agent's defaults; a workflow step may override them
    (`retries`, `time_limit` in the YAML). Only `autoretry_for` errors are retried: a bug or a
    refused input fails the step at once. Backoff is exponential with full jitter, capped at
    `retry_backoff_max` seconds, at most `max_retries` times.
    """

    name: str = ""
    version: str = "1"
    description: str = ""
    queue: str = "default"  # which worker pool runs it: default, ocr or llm
    # JSON schema of the per-study configuration (AgentConfig.config), checked on every save.
    config_schema: dict = {"type": "object"}
    autoretry_for: tuple[type[BaseException], ...] = (TransientStepError, ConnectionError, TimeoutError)
    max_retries: int = 0
    retry_backoff: float = 1  # seconds before the first retry (upper bound of its jitter)
    retry_backoff_max: float = 60
    time_limit: int | None = None  # seconds; None: the worker's CELERY_TASK_TIME_LIMIT
    soft_time_limit: int | None = None  # None: a little before time_limit

    def retry_policy(self) -> dict:
        return {"max": self.max_retries, "backoff": self.retry_backoff, "backoff_max": self.retry_backoff_max}

    def run(self, *, step) -> dict:
        """Do the work of `step` (an AgentStep, input in step.input) and return its output (JSON)."""
        raise NotImplementedError


class AgentNotFound(LookupError):
    pass


_agents: dict[str, Agent] = {}


def register(agent_class: type[Agent]) -> type[Agent]:
    """Class decorator: make an agent available by its name."""
    name = agent_class.name
    if not name:
        raise ValueError(f"{agent_class.__qualname__} has no name")
    if agent_class.queue not in QUEUES:
        raise ValueError(f"Agent {name!r}: queue {agent_class.queue!r} is not one of {QUEUES}")
    # A broken schema fails at start-up, not at the first save of a study's configuration.
    Draft202012Validator.check_schema(agent_class.config_schema)
    existing = _agents.get(name)
    # Re-importing the same module (autoreload, tests) registers the same class again; that is fine.
    if existing is not None and type(existing).__qualname__ != agent_class.__qualname__:
        raise ValueError(f"Agent {name!r} is already registered by {type(existing).__qualname__}")
    _agents[name] = agent_class()
    return agent_class


def unregister(name: str) -> None:
    _agents.pop(name, None)


def get_agent(name: str) -> Agent:
    try:
        return _agents[name]
    except KeyError:
        raise AgentNotFound(f"No agent named {name!r}; registered: {', '.join(sorted(_agents))}") from None


def registered_agents() -> list[Agent]:
    return [_agents[name] for name in sorted(_agents)]
