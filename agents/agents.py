"""The agents of the agents app itself: `ping`, which proves the machinery end to end, and
`sleep`, a slow step for tests of leases and killed workers (tests/test_agents_sigkill.py)."""

import time

from agents.events import event_publish
from agents.registry import Agent, register


@register
class PingAgent(Agent):
    name = "ping"
    version = "1"
    description = "Answers pong from the worker that ran it; checks broker, worker and database."

    def run(self, *, step) -> dict:
        return {"pong": True, "worker": step.claimed_by}


@register
class SleepAgent(Agent):
    name = "sleep"
    version = "1"
    description = "Publishes a `sleep.done` event, then sleeps `seconds`: a slow step with one output row."
    config_schema = {
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 600}},
        "additionalProperties": False,
    }

    def run(self, *, step) -> dict:
        seconds = step.input.get("config", {}).get("seconds", 1)
        # Written first, so a worker killed during the sleep has an uncommitted row: the row and
        # the step's success commit together (agents.services.step_execute), exactly once.
        event = event_publish(
            type="sleep.done", study_id=step.input.get("study_id"), payload={"attempt": step.attempts}, source_step=step
        )
        time.sleep(seconds)
        return {"slept": seconds, "event_id": event.pk, "attempt": step.attempts}
