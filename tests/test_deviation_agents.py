"""The deviations agents on a real Celery worker: `run_agent PatternRecognition --study ID`, the
data_review workflow (edit checks, then PatternRecognition) and the deviation_review workflow
(RootCauseAnalysis, then ComplianceReporting), writing as the agents' own accounts."""

import time
from io import StringIO

import pytest
from django.core.management import call_command

from agents.models import FINISHED, AgentStep, Status
from agents.orchestrator import workflow_definition, workflow_start
from deviations.detection import detection_run
from deviations.models import ComplianceReport, DetectionPass, Deviation
from tests.deviation_data import Trial, day

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def wait_for(run):
    for _ in range(600):
        run.refresh_from_db()
        if run.status in FINISHED:
            return run
        time.sleep(0.1)
    return run


def late_trial() -> Trial:
    trial = Trial()
    subject = trial.subject(consent=day(-13))
    trial.visit(subject, "WEEK 2", day(20))
    return trial


def test_run_agent_pattern_recognition_detects_and_stores_as_the_agent():
    trial = late_trial()
    out = StringIO()
    call_command("run_agent", "PatternRecognition", "--study", str(trial.study.pk), stdout=out)
    assert "succeeded" in out.getvalue()
    step = AgentStep.objects.get(agent="PatternRecognition")
    figures = step.output["studies"][trial.study.protocol_id]
    assert (figures["created"], figures["plan_version"]) == (2, 1)
    deviations = Deviation.objects.filter(study=trial.study)
    assert set(deviations.values_list("category", flat=True)) == {"informed_consent", "visit_window"}
    assert {d.history.get().history_user.username for d in deviations} == {"agent.PatternRecognition"}


def test_run_agent_compliance_reporting_summarises_the_period_asked_for():
    trial = late_trial()
    detection_run(study=trial.study, actor=trial.actor)
    call_command("run_agent", "ComplianceReporting", "--study", str(trial.study.pk), "--config",
                 '{"period_start": "2025-01-01", "period_end": "2025-06-30"}', stdout=StringIO())
    quarter = ComplianceReport.objects.get(study=trial.study, period_start="2025-01-01")
    assert quarter.summary["total"] == 2
    assert quarter.summary["by_category"] == {"informed_consent": 1, "visit_window": 1}
    assert quarter.history.get().history_user.username == "agent.ComplianceReporting"


def test_the_nightly_data_review_runs_pattern_recognition_after_the_query_analyzer(worker):
    spec = workflow_definition("data_review").spec
    detect = next(s for s in spec["steps"] if s["agent"] == "PatternRecognition")
    assert detect["after"] == ["analyze"] and any("schedule" in t for t in spec["triggers"] if isinstance(t, dict))
    trial = late_trial()
    run = wait_for(workflow_start(name="data_review", study_id=trial.study.pk))
    assert run.status == Status.SUCCEEDED, list(run.steps.values("key", "error"))
    assert run.steps.get(key="detect").output["studies"][trial.study.protocol_id]["created"] == 2
    assert DetectionPass.objects.filter(study=trial.study).count() == 1
    again = wait_for(workflow_start(name="data_review", study_id=trial.study.pk))
    assert again.steps.get(key="detect").output["studies"][trial.study.protocol_id]["created"] == 0
    assert Deviation.objects.filter(study=trial.study).count() == 2


def test_the_deviation_review_workflow_proposes_root_causes_and_stores_the_summary(worker):
    trial = late_trial()
    detection_run(study=trial.study, actor=trial.actor)
    run = wait_for(workflow_start(name="deviation_review", study_id=trial.study.pk))
    assert run.status == Status.SUCCEEDED, list(run.steps.values("key", "status", "error", "output"))
    assert run.steps.get(key="root_causes").output["studies"][trial.study.protocol_id]["patterns"] == 0
    report_step = run.steps.get(key="report").output["studies"][trial.study.protocol_id]
    report = ComplianceReport.objects.get(pk=report_step["report"])  # the last whole month: empty here
    assert report.history.get().history_user.username == "agent.ComplianceReporting"
    assert report.inputs["plan_version"] == 1 and not report.is_signed
