"""The agents of the deviations cluster:
- PatternRecognition detects deviations from the data against the study's deviation plan
  (`run_agent PatternRecognition --study ID`; the `detect` step of the data_review workflow, after
  the imports and the QueryAnalyzer, nightly);
- RootCauseAnalysis finds recurring patterns per site, category and period and proposes a root
  cause with its numbers (deviation_review workflow);
- ComplianceReporting stores the periodic deviation summary of a study, to be signed off."""

import datetime

from django.utils import timezone

from agents.identity import agent_user
from agents.registry import Agent, register
from agents.services import agent_config_get
from deviations.detection import NoPlan, detection_run
from deviations.models import DeviationPlan
from deviations.reporting import compliance_report_create
from deviations.rootcause import root_cause_analyse
from studies.models import Study

DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}


def _studies(step, *, with_plan: bool = False):
    """The step's study, or (a scheduled run) every active study; with_plan: only those with a plan."""
    study_id = step.input.get("study_id")
    if study_id:
        return Study.objects.filter(pk=study_id)
    studies = Study.objects.filter(status=Study.Status.ACTIVE).order_by("pk")
    if with_plan:
        studies = studies.filter(pk__in=DeviationPlan.objects.values("study_id"))
    return studies


def _config(agent: str, study: Study, step) -> dict | None:
    stored = agent_config_get(agent=agent, study_id=study.pk)
    if not step.input.get("study_id") and not stored.enabled:  # paused on that study
        return None
    return {**stored.config, **step.input.get("config", {})}


@register
class PatternRecognitionAgent(Agent):
    name = "PatternRecognition"
    version = "1"
    description = ("Detects protocol deviations from the data against the study's deviation plan (consent, visit "
                   "windows and missed visits, dosing, prohibited medications, eligibility, SAE reporting), codes "
                   "them with the SDTM DV vocabulary and closes those the data no longer supports.")
    config_schema = {"type": "object", "properties": {}, "additionalProperties": False}
    time_limit = 600

    def run(self, *, step) -> dict:
        actor, out = agent_user(self.name), {}
        for study in _studies(step, with_plan=True):
            if _config(self.name, study, step) is None:
                continue
            try:
                done = detection_run(study=study, actor=actor)
            except NoPlan as error:  # a study without a plan: nothing to detect, not a failure
                out[study.protocol_id] = {"skipped": str(error)}
                continue
            out[study.protocol_id] = {"pass": done.pk, "plan_version": done.plan.version, "seconds": done.seconds,
                                      **done.counts["totals"]}
        return {"studies": out}


@register
class RootCauseAnalysisAgent(Agent):
    name = "RootCauseAnalysis"
    version = "1"
    description = ("Groups deviations per site, category and period, flags sites whose rate is far above the "
                   "study's (the KRI way, kri0003/kri0004 included) and proposes a root cause with its numbers.")
    config_schema = {"type": "object", "additionalProperties": False, "properties": {
        "period_days": {"type": "integer", "minimum": 7, "maximum": 730},
        "end": DATE | {"description": "last day of the period (default today)"}}}
    time_limit = 600

    def run(self, *, step) -> dict:
        actor, out = agent_user(self.name), {}
        for study in _studies(step):
            config = _config(self.name, study, step)
            if config is None:
                continue
            end = datetime.date.fromisoformat(config["end"]) if config.get("end") else timezone.now().date()
            found = root_cause_analyse(study=study, actor=actor, end=end, period_days=config.get("period_days", 90))
            out[study.protocol_id] = {"patterns": len(found), "new": sum(1 for _, created in found if created)}
        return {"studies": out}


@register
class ComplianceReportingAgent(Agent):
    name = "ComplianceReporting"
    version = "1"
    description = ("Stores a study's periodic deviation summary (counts by category, importance and site, trend, "
                   "open CAPAs, overdue reviews) with its inputs, for a person to sign off.")
    config_schema = {"type": "object", "additionalProperties": False, "properties": {
        "period_start": DATE, "period_end": DATE,
        "review_within_days": {"type": "integer", "minimum": 1, "maximum": 365}}}
    time_limit = 600

    def run(self, *, step) -> dict:
        actor, out = agent_user(self.name), {}
        for study in _studies(step):
            config = _config(self.name, study, step)
            if config is None:
                continue
            end = (datetime.date.fromisoformat(config["period_end"]) if config.get("period_end")
                   else timezone.now().date().replace(day=1) - datetime.timedelta(days=1))
            start = (datetime.date.fromisoformat(config["period_start"]) if config.get("period_start")
                     else end.replace(day=1))
            report, created = compliance_report_create(study=study, actor=actor, period_start=start, period_end=end,
                                                       review_within_days=config.get("review_within_days", 30))
            out[study.protocol_id] = {"report": report.pk, "created": created,
                                      "deviations": report.summary["total"]}
        return {"studies": out}
