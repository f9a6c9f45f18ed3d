"""Workflow definitions and the one place a Celery canvas is built from them.

A definition is a list of stages; a stage is one step `(key, agent)` or a list of steps that run
in parallel. Stages run one after another: chain(step, group(step, step), step). State moves through
the database (AgentStep.input/output), not through task return values, so every signature is
immutable (.si) and a step can be re-run on its own.
"""

import structlog
from celery import chain, group
from django.db import transaction

from agents.models import AgentRun, AgentStep
from agents.registry import get_agent
from agents.tasks import run_step

# Hard-coded until workflows are versioned YAML definitions (a later issue).
WORKFLOWS: dict[str, list] = {
    "ping": [("start", "ping"), [("ping_a", "ping"), ("ping_b", "ping")], ("finish", "ping")],
}


class WorkflowNotFound(LookupError):
    pass


def workflow_definition(name: str) -> list:
    try:
        return WORKFLOWS[name]
    except KeyError:
        raise WorkflowNotFound(f"No workflow named {name!r}; known: {', '.join(sorted(WORKFLOWS))}") from None


def workflow_start(*, name: str, study_id: int | None = None, trigger: str = "manual", actor=None) -> AgentRun:
    """Create the run and its steps in one transaction and enqueue the canvas once it is committed."""
    stages = workflow_definition(name)
    with transaction.atomic():
        run = AgentRun.objects.create(
            workflow=name,
            study_id=study_id,
            trigger=trigger,
            triggered_by=actor,
            # Set by django-structlog's RequestMiddleware when started from a request.
            request_id=str(structlog.contextvars.get_contextvars().get("request_id", ""))[:64],
            steps_total=sum(len(_steps_of(stage)) for stage in stages),
        )
        steps = {key: _step_create(run, key, agent) for stage in stages for key, agent in _steps_of(stage)}
        canvas = _canvas(stages, steps)
        # A worker must not look for rows that are not committed yet (STYLE.md 5).
        transaction.on_commit(canvas.apply_async)
    return run


def _steps_of(stage) -> list[tuple[str, str]]:
    return stage if isinstance(stage, list) else [stage]


def _step_create(run: AgentRun, key: str, agent_name: str) -> AgentStep:
    agent = get_agent(agent_name)
    return AgentStep.objects.create(run=run, key=key, agent=agent.name, agent_version=agent.version, input={})


def _signature(step: AgentStep):
    return run_step.si(step.pk).set(queue=get_agent(step.agent).queue)


def _canvas(stages: list, steps: dict[str, AgentStep]):
    # A group followed by a step becomes a chord inside the chain: it needs a result backend.
    parts = []
    for stage in stages:
        if isinstance(stage, list):
            parts.append(group(_signature(steps[key]) for key, _ in stage))
        else:
            parts.append(_signature(steps[stage[0]]))
    return chain(*parts)
