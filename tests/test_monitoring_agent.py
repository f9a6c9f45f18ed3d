"""The MonitoringOrchestrator as an agent on a real Celery worker: `run_agent MonitoringOrchestrator
--study ID` plans the study as the agent's own account, and the risk_review workflow runs it after
RiskAssessment, so the tiers it has just written are the ones planned for."""

import json
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from agents.models import FINISHED, AgentStep, Status
from agents.orchestrator import workflow_start
from agents.services import agent_config_set
from sdv.models import SiteRiskAssessment
from sdv.monitoring.models import MonitoringVisit
from sdv.monitoring.plan_import import monitoring_plan_import
from tests.factories import SiteFactory, StudyFactory, UserFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
PLAN = Path(__file__).parent / "data" / "monitoring" / "plan_small.json"
CONFIG = {"today": "2026-03-02", "time_limit": 3}


def study_with_plan(protocol_id: str):
    study = StudyFactory(protocol_id=protocol_id)
    for number in ("701", "702", "703", "704"):
        SiteFactory(study=study, number=number)
    document = json.loads(PLAN.read_text())
    for number in ("702", "704"):  # their tiers come from the risk assessment
        del document["sites"][number]["tier"]
    monitoring_plan_import(study=study, raw=json.dumps(document).encode(), actor=UserFactory(username=protocol_id))
    return study


def test_run_agent_plans_the_study_as_the_agents_account():
    study = study_with_plan("MON-AG1")
    out = StringIO()
    call_command("run_agent", "MonitoringOrchestrator", "--study", str(study.pk), "--config", json.dumps(CONFIG),
                 stdout=out)
    step = AgentStep.objects.get(agent="MonitoringOrchestrator")
    assert step.status == Status.SUCCEEDED and "succeeded" in out.getvalue()
    visits = MonitoringVisit.objects.filter(study=study)
    assert step.output["visits"] == visits.count() > 0 and step.output["breaches"] == 0
    assert step.output["tiers"]["702"] == "high"  # not assessed yet: the most cautious tier
    assert visits.first().history.earliest().history_user.username == "agent.MonitoringOrchestrator"


def test_the_risk_review_workflow_replans_monitoring_after_the_risk_assessment(worker):
    study = study_with_plan("MON-AG2")
    agent_config_set(agent="MonitoringOrchestrator", study_id=study.pk, config=CONFIG, enabled=True, actor=None)
    run = workflow_start(name="risk_review", study_id=study.pk)
    for _ in range(600):
        run.refresh_from_db()
        if run.status in FINISHED:
            break
        time.sleep(0.1)
    assert run.status == Status.SUCCEEDED, list(run.steps.values("key", "error", "status"))
    assess, monitor = run.steps.get(key="assess"), run.steps.get(key="monitor")
    assert assess.finished_at <= monitor.started_at
    tiers = dict(SiteRiskAssessment.objects.filter(site__study=study).values_list("site__number", "tier"))
    assert monitor.output["tiers"]["702"] == tiers["702"] and monitor.output["tiers"]["701"] == "high"
    assert MonitoringVisit.objects.filter(study=study).count() == monitor.output["visits"] > 0
