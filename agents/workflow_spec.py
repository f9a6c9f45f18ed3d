"""The workflow definition language: YAML, checked by a JSON schema and a few graph rules.

    name: demo                       # [a-z0-9_.-]
    version: 2                       # a change to a definition that has run is a new version
    description: ...
    triggers: [manual, on_import, {on_event: risk.changed}, {schedule: {cron: "0 2 * * *"}}]
    steps:
      - key: extract
        agent: ping                  # a registered agent
        config: {source: edc}        # handed to the agent in step.input["config"]
        retries: {max: 3, backoff: 2, backoff_max: 60}   # or `retries: 3`; transient errors only
        time_limit: 120              # seconds (hard); the soft limit is a little earlier
        on_failure:                  # compensation, run by a rollback if this step succeeded
          - {agent: ping, config: {undo: extract}}
      - {key: check, agent: ping, after: [extract], fan_out: sites}   # one step per site of the study

Steps without `after` start first; `stages()` layers the graph (a step runs in the stage after the
last of its dependencies), and steps sharing a stage run in parallel. Errors carry the line of the
YAML node they are about: `line_of()` follows a jsonschema error path through yaml's node marks.
"""

import hashlib
import json
from pathlib import Path

import jsonschema
import yaml
from django.conf import settings

from agents.registry import AgentNotFound, get_agent

BUILTIN_DIR = Path(__file__).resolve().parent / "workflows"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,40}$"

_COMPENSATION = {
    "type": "object",
    "required": ["agent"],
    "additionalProperties": False,
    "properties": {"agent": {"type": "string", "minLength": 1}, "config": {"type": "object"}},
}
_RETRIES = {
    "oneOf": [
        {"type": "integer", "minimum": 0, "maximum": 10},
        {
            "type": "object",
            "required": ["max"],
            "additionalProperties": False,
            "properties": {
                "max": {"type": "integer", "minimum": 0, "maximum": 10},
                "backoff": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
                "backoff_max": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
            },
        },
    ]
}
_TRIGGER = {
    "oneOf": [
        {"enum": ["manual", "on_import"]},
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "on_event": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"},
                "schedule": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "maxProperties": 1,
                    "properties": {
                        "cron": {"type": "string", "pattern": r"^\S+( \S+){4}$"},
                        "every": {"type": "integer", "minimum": 10},
                    },
                },
            },
        },
    ]
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "version", "steps"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "version": {"type": "integer", "minimum": 1},
        "description": {"type": "string"},
        "triggers": {"type": "array", "items": _TRIGGER},
        "steps": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["key", "agent"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string", "pattern": KEY_PATTERN},
                    "agent": {"type": "string", "minLength": 1},
                    "config": {"type": "object"},
                    "after": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                    "fan_out": {"enum": ["sites"]},
                    "retries": _RETRIES,
                    "time_limit": {"type": "integer", "minimum": 1},
                    "on_failure": {"oneOf": [_COMPENSATION, {"type": "array", "items": _COMPENSATION}]},
                },
            },
        },
    },
}


class WorkflowSpecError(ValueError):
    """A definition that is refused, with the line (1-based) of the YAML it is about."""

    def __init__(self, reason: str, *, line: int | None = None, origin: str = "<workflow>"):
        self.reason, self.line, self.origin = reason, line, origin
        super().__init__(f"{origin}, line {line}: {reason}" if line else f"{origin}: {reason}")


def spec_parse(source: str, *, origin: str = "<workflow>") -> dict:
    """Parse and check a definition; returns the spec (plain data) or raises WorkflowSpecError."""
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
        spec = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = f"invalid YAML: {getattr(exc, 'problem', None) or exc}"
        raise WorkflowSpecError(reason, line=mark.line + 1 if mark else None, origin=origin) from None
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(spec), key=lambda e: list(e.path))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise WorkflowSpecError(f"{where}: {error.message}", line=line_of(root, error.absolute_path), origin=origin)
    _check_graph(spec, root, origin)
    return spec


def line_of(node, path) -> int | None:
    """The line of the YAML node at `path` (keys and list indexes), or of its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if key.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _check_graph(spec: dict, root, origin: str) -> None:
    def refuse(reason: str, *path):
        raise WorkflowSpecError(reason, line=line_of(root, ["steps", *path]), origin=origin)

    index = {}
    for i, step in enumerate(spec["steps"]):
        if step["key"] in index:
            refuse(f"step key {step['key']!r} is used twice", i, "key")
        index[step["key"]] = i
    for i, step in enumerate(spec["steps"]):
        agents = [(step["agent"], (i, "agent"))] + [
            (c["agent"], (i, "on_failure", *([] if isinstance(step["on_failure"], dict) else [j]), "agent"))
            for j, c in enumerate(compensations(step))
        ]
        for agent, path in agents:
            try:
                get_agent(agent)
            except AgentNotFound as exc:
                refuse(str(exc), *path)
        for j, dependency in enumerate(step.get("after", [])):
            if dependency not in index:
                refuse(f"step {step['key']!r} runs after {dependency!r}, which is not a step", i, "after", j)
        if step.get("time_limit", 0) >= settings.AGENT_STEP_LEASE_SECONDS:
            refuse(
                f"time_limit {step['time_limit']} must be below the step lease "
                f"(AGENT_STEP_LEASE_SECONDS={settings.AGENT_STEP_LEASE_SECONDS})",
                i,
                "time_limit",
            )
    cycle = _cycle(spec["steps"])
    if cycle:
        refuse(f"steps depend on each other in a cycle: {' -> '.join(cycle)}", index[cycle[0]], "after")


def _cycle(steps: list[dict]) -> list[str]:
    """A dependency cycle as a list of keys (first repeated last), or [] when there is none."""
    after = {s["key"]: s.get("after", []) for s in steps}
    state: dict[str, str] = {}

    def visit(key, trail):
        state[key] = "open"
        for dependency in after[key]:
            if state.get(dependency) == "open":
                return trail[trail.index(dependency):] + [dependency] if dependency in trail else [key, dependency]
            if dependency not in state:
                found = visit(dependency, trail + [dependency])
                if found:
                    return found
        state[key] = "done"
        return []

    for step in steps:
        if step["key"] not in state:
            found = visit(step["key"], [step["key"]])
            if found:
                return found
    return []


def stages(spec: dict) -> list[list[dict]]:
    """Steps layered by dependency: stage n holds the steps whose last dependency is in stage n-1."""
    by_key = {s["key"]: s for s in spec["steps"]}
    level: dict[str, int] = {}

    def depth(key):
        if key not in level:
            level[key] = 1 + max((depth(d) for d in by_key[key].get("after", [])), default=-1)
        return level[key]

    layered: list[list[dict]] = [[] for _ in range(1 + max(depth(k) for k in by_key))]
    for step in spec["steps"]:
        layered[level[step["key"]]].append(step)
    return layered


def compensations(step: dict) -> list[dict]:
    on_failure = step.get("on_failure", [])
    return [on_failure] if isinstance(on_failure, dict) else list(on_failure)


def retry_policy(step: dict) -> dict:
    retries = step.get("retries", 0)
    if isinstance(retries, int):
        retries = {"max": retries}
    return {"max": retries["max"], "backoff": retries.get("backoff", 1), "backoff_max": retries.get("backoff_max", 60)}


def spec_checksum(spec: dict) -> str:
    """Of the parsed spec, not the text: a comment or a reformatting is not a change."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def builtin_sources() -> list[tuple[Path, str]]:
    return [(path, path.read_text()) for path in sorted(BUILTIN_DIR.glob("*.yaml"))]


def builtin_names() -> set[str]:
    return {(yaml.safe_load(source) or {}).get("name") for _, source in builtin_sources()}


def builtin_schedules() -> list[tuple[str, dict]]:
    """(workflow name, schedule trigger) of the built-in definitions, for celery beat. Read without
    the database or the registry (beat may start before either is needed)."""
    found = []
    for _, source in builtin_sources():
        data = yaml.safe_load(source) or {}
        for trigger in data.get("triggers", []):
            if isinstance(trigger, dict) and "schedule" in trigger:
                found.append((data["name"], trigger["schedule"]))
    return found
