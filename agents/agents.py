"""The agents of the agents app itself: only `ping`, which proves the machinery end to end."""

from agents.registry import Agent, register


@register
class PingAgent(Agent):
    name = "ping"
    version = "1"
    description = "Answers pong from the worker that ran it; checks broker, worker and database."

    def run(self, *, step) -> dict:
        return {"pong": True, "worker": step.claimed_by}
