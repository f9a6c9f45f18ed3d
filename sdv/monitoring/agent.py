"""MonitoringOrchestrator: turns the monitoring plan in force and the sites' risk tiers into a
schedule of on-site and remote visits grouped into trips (sdv/monitoring/solver.py). Runs in the
`risk_review` workflow after RiskAssessment, so a tier change re-plans; `run_agent
MonitoringOrchestrator --study ID` plans one study by hand. A study without a monitoring plan is
skipped; a scheduled run (no study) covers every active study that has one."""

import datetime

from agents.identity import agent_user
from agents.registry import Agent, register
from agents.services import agent_config_get
from sdv.monitoring.models import MonitoringPlan
from sdv.monitoring.services import DEFAULT_TIME_LIMIT, monitoring_plan_schedule
from studies.models import Study


@register
class MonitoringOrchestratorAgent(Agent):
    name = "MonitoringOrchestrator"
    version = "1"
    description = ("Schedules on-site and remote monitoring visits from the monitoring plan and the sites' risk "
                   "tiers (OR-Tools CP-SAT), grouped into trips of least travel; re-plans when a tier changes.")
    config_schema = {
        "type": "object",
        "properties": {
            "today": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$",
                      "description": "No visit is planned or moved before this day (default: today)"},
            "time_limit": {"type": "number", "minimum": 0.5, "maximum": 600,
                           "description": f"Seconds the solver may take (default {DEFAULT_TIME_LIMIT:g})"},
        },
        "additionalProperties": False,
    }
    time_limit = 600

    def run(self, *, step) -> dict:
        study_id = step.input.get("study_id")
        studies = (Study.objects.filter(pk=study_id) if study_id
                   else Study.objects.filter(status=Study.Status.ACTIVE,
                                             pk__in=MonitoringPlan.objects.values("study_id")).order_by("pk"))
        actor = agent_user(self.name)
        out = {}
        for study in studies:
            stored = agent_config_get(agent=self.name, study_id=study.pk)
            if not study_id and not stored.enabled:
                continue
            config = {**stored.config, **step.input.get("config", {})}
            today = datetime.date.fromisoformat(config["today"]) if config.get("today") else None
            out[study.protocol_id] = monitoring_plan_schedule(
                study=study, actor=actor, today=today, time_limit=float(config.get("time_limit", DEFAULT_TIME_LIMIT)))
        return next(iter(out.values())) if study_id and out else {"studies": out}
