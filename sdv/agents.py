"""RiskAssessment: computes a KRI snapshot of a study (every active KRI, site risk scores, tiers,
`risk.changed` events) and re-plans SDV: sites whose tier changed, and data entered since the last plan. Runs in the
`risk_review` workflow after imports and daily (agents/workflows/risk_review.yaml);
`run_agent RiskAssessment --study ID --snapshot YYYY-MM-DD` computes one snapshot
by hand."""

import datetime

from django.utils import timezone

from agents.events import event_publish
from agents.identity import agent_user
from agents.registry import Agent, register
from agents.services import agent_config_get
from sdv.models import SourceDocument
from sdv.sdv_plan import sdv_plans_update
from sdv.services import kri_snapshot_compute
from studies.models import Site, Study


@register
class RiskAssessmentAgent(Agent):
    name = "RiskAssessment"
    version = "1"
    description = ("Computes gsm-compatible KRIs per site, country and study, site risk scores and tiers with "
                   "their explanation, quality tolerance limits, and re-plans risk-based SDV where a tier changed.")
    config_schema = {
        "type": "object",
        "properties": {
            "snapshot": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$",
                         "description": "Snapshot date (default: today, UTC)"},
            "plan_sdv": {"type": "boolean", "description": "Re-plan SDV for sites whose tier changed (default true)"},
        },
        "additionalProperties": False,
    }
    time_limit = 1800

    def run(self, *, step) -> dict:
        study_id = step.input.get("study_id")
        # A scheduled run has no study: it covers every active study, one snapshot each.
        studies = (Study.objects.filter(pk=study_id) if study_id
                   else Study.objects.filter(status=Study.Status.ACTIVE).order_by("pk"))
        actor = agent_user(self.name)
        out = {}
        for study in studies:
            stored = agent_config_get(agent=self.name, study_id=study.pk)
            if not study_id and not stored.enabled:  # paused on that study: the schedule leaves it alone
                continue
            # The study's stored configuration, overridden by the step's (workflow YAML, --config).
            config = {**stored.config, **step.input.get("config", {})}
            out[study.protocol_id] = self._assess(study, config, actor)
        # One study (the usual case): its figures at the top level, as run_agent prints them.
        return next(iter(out.values())) if study_id and out else {"studies": out}

    @staticmethod
    def _assess(study: Study, config: dict, actor) -> dict:
        snapshot_date = (datetime.date.fromisoformat(config["snapshot"]) if config.get("snapshot")
                         else timezone.now().date())
        snapshot = kri_snapshot_compute(study=study, snapshot_date=snapshot_date, actor=actor)
        planned = []
        if config.get("plan_sdv", True):  # every site: new tiers, and data entered since the last plan
            planned = sdv_plans_update(study=study, sites=Site.objects.filter(study=study).order_by("number"),
                                       actor=actor, reason=f"SDV plan from the KRI snapshot of {snapshot_date}")
        if planned and SourceDocument.objects.filter(study=study).exists():  # source_verification follows it
            event_publish(type="sdv.plan_updated", study_id=study.pk, payload={"sites": [p.site_id for p in planned]})
        tiers = {}
        for tier in snapshot.site_assessments.values_list("tier", flat=True):
            tiers[tier] = tiers.get(tier, 0) + 1
        return {"snapshot": snapshot_date.isoformat(), "snapshot_id": snapshot.pk,
                "results": snapshot.results.count(), "problems": snapshot.problems, "tiers": tiers,
                "qtl": [{"kri": q["kri"], "status": q["status"]} for q in snapshot.qtl],
                "sdv_plans_updated": len(planned), "seconds": round(snapshot.seconds, 3)}

# The MonitoringOrchestrator lives with the rest of the monitoring plan (sdv/monitoring).
from sdv.monitoring.agent import MonitoringOrchestratorAgent  # noqa: E402, F401

# DataVerification lives with the rest of source verification (sdv/verification/); importing it here registers it.
from sdv.verification.agent import DataVerificationAgent  # noqa: E402, F401
