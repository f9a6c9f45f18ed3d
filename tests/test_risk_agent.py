"""RiskAssessment as an agent on a real Celery worker: `run_agent RiskAssessment --study ID
--config '{"snapshot": ...}'` computes and stores the snapshot and the SDV plans; the risk_review
workflow runs it for one study (after imports, by hand) and for every active study on its
schedule, writing as the agent's own account."""

import datetime
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import FINISHED, AgentRun, AgentStep, Status
from agents.orchestrator import workflow_definition, workflow_start, workflow_trigger
from sdv.models import KriResult, KriSnapshot, SdvPlan, SdvSelection, SiteRiskAssessment
from studies.models import Study
from tests.factories import (
    DataPointFactory,
    FormDefinitionFactory,
    ItemDefinitionFactory,
    SiteFactory,
    StudyFactory,
    SubjectFactory,
    SubjectVisitFactory,
)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def small_study(status=Study.Status.ACTIVE) -> Study:
    study = StudyFactory(status=status)
    form = FormDefinitionFactory(study=study, oid="AE")
    serious = ItemDefinitionFactory(study=study, form=form, oid="AE.AESER", data_type="text")
    for number in ("1", "2", "3"):
        site = SiteFactory(study=study, number=f"{study.pk}-{number}")
        for _ in range(3):
            subject = SubjectFactory(site=site, enrolment_date=datetime.date(2025, 1, 1))
            visit = SubjectVisitFactory(subject=subject, actual_date=datetime.date(2025, 2, 1))
            DataPointFactory(visit=visit, item=serious, form=form, raw_value="N", value_number=None)
    return study


def wait_for(run: AgentRun) -> AgentRun:
    for _ in range(600):
        run.refresh_from_db()
        if run.status in FINISHED:
            return run
        time.sleep(0.1)
    return run


def test_run_agent_risk_assessment_computes_the_snapshot_asked_for():
    study = small_study()
    out = StringIO()
    call_command("run_agent", "RiskAssessment", "--study", str(study.pk), "--snapshot", "2025-03-01", stdout=out)
    snapshot = KriSnapshot.objects.get(study=study)
    assert snapshot.snapshot_date == datetime.date(2025, 3, 1)
    assert KriResult.objects.filter(snapshot=snapshot, kri_id="kri0001").count() == 3
    assert SdvPlan.objects.filter(site__study=study).count() == 3
    # The serious-AE flag is critical by default: every one of them is selected for SDV.
    assert SdvSelection.objects.filter(study=study, reason="critical").count() == 9
    step = AgentStep.objects.get(agent="RiskAssessment")
    assert step.output["snapshot"] == "2025-03-01" and step.output["tiers"] == {"low": 3}
    assert step.output["sdv_plans_updated"] == 3 and "succeeded" in out.getvalue()
    assessment = SiteRiskAssessment.objects.filter(snapshot=snapshot).first()
    assert assessment.history.get().history_user.username == "agent.RiskAssessment"


def test_run_agent_refuses_a_snapshot_that_is_not_a_date():
    with pytest.raises(CommandError, match="--snapshot must be a date"):
        call_command("run_agent", "RiskAssessment", "--study", "1", "--snapshot", "2025-13-01")
    assert not AgentStep.objects.exists()


def test_the_risk_review_workflow_runs_on_a_worker_and_on_its_schedule(worker):
    study, later, closed = small_study(), small_study(), small_study(status=Study.Status.SETUP)
    run = wait_for(workflow_start(name="risk_review", study_id=study.pk))
    assert run.status == Status.SUCCEEDED, list(run.steps.values("error"))
    today = KriSnapshot.objects.get(study=study)
    assert KriResult.objects.filter(snapshot=today, level="site", kri_id="kri0001").count() == 3
    assert SdvPlan.objects.filter(site__study=study).count() == 3
    assert run.steps.get(key="assess").output["results"] == today.results.count()
    # Again the same day: the snapshot is replaced, not doubled; the plans are not redone.
    again = wait_for(workflow_start(name="risk_review", study_id=study.pk))
    assert again.status == Status.SUCCEEDED and KriSnapshot.objects.filter(study=study).count() == 1
    assert again.steps.get(key="assess").output["sdv_plans_updated"] == 0
    # The schedule's run has no study: it covers every active study (and leaves set-up ones alone).
    [scheduled] = workflow_trigger(trigger="schedule", name="risk_review")
    scheduled = wait_for(scheduled)
    assert scheduled.status == Status.SUCCEEDED and scheduled.study_id is None
    assert set(scheduled.steps.get(key="assess").output["studies"]) == set(
        Study.objects.filter(status=Study.Status.ACTIVE).values_list("protocol_id", flat=True))
    assert KriSnapshot.objects.filter(study=later).exists() and not KriSnapshot.objects.filter(study=closed).exists()


def test_the_risk_review_workflow_runs_after_imports_and_daily():
    spec = workflow_definition("risk_review").spec
    assert "on_import" in spec["triggers"] and any("schedule" in t for t in spec["triggers"] if isinstance(t, dict))
    # Then the monitoring visits are re-planned from the new tiers (tests/test_monitoring_agent.py).
    assert [(s["agent"], s.get("after")) for s in spec["steps"]] == [("RiskAssessment", None),
                                                                     ("MonitoringOrchestrator", ["assess"])]
