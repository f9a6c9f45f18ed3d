"""Run one registered agent as a one-step run and wait for it:
`python manage.py run_agent NAME [--study ID] [--config JSON] [--snapshot YYYY-MM-DD]`. Exits
non-zero when it failed."""

import datetime
import json

from django.core.management.base import BaseCommand, CommandError

from agents.models import AgentRun
from agents.orchestrator import agent_run_start
from agents.registry import AgentNotFound, get_agent
from agents.services import WorkflowRunOverlap

from ._run_progress import run_to_the_end


class Command(BaseCommand):
    help = "Run one agent on a study, wait for it to finish and print a summary."

    def add_arguments(self, parser):
        parser.add_argument("name", help="agent name, e.g. ping (see list_agents)")
        parser.add_argument("--study", type=int, default=None, help="study id the run is about")
        parser.add_argument("--config", default="{}", help="the step's config, as a JSON object")
        parser.add_argument("--snapshot", default=None,
                            help="the data cut-off date, YYYY-MM-DD (agents that take one: RiskAssessment)")
        parser.add_argument("--timeout", type=float, default=None,
                            help="seconds to wait (default: the steps' time limits plus a minute)")

    def handle(self, *args, name: str, study: int | None, config: str, timeout: float | None,
               snapshot: str | None = None,
               **options):
        try:
            get_agent(name)
            step_config = json.loads(config)
        except AgentNotFound as exc:
            raise CommandError(str(exc))
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not JSON: {exc}")
        if not isinstance(step_config, dict):
            raise CommandError("--config must be a JSON object")
        if snapshot is not None:
            try:
                step_config["snapshot"] = datetime.date.fromisoformat(snapshot).isoformat()
            except ValueError:
                raise CommandError(f"--snapshot must be a date, YYYY-MM-DD (got {snapshot!r})") from None

        def start() -> AgentRun:
            try:
                return agent_run_start(agent=name, study_id=study, config=step_config)
            except WorkflowRunOverlap as exc:
                raise CommandError(str(exc))

        run_to_the_end(self, start, timeout=timeout)
