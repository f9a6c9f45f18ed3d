"""The DataVerification agent on a real Celery worker with real tesseract (never a mocked OCR):
`run_agent DataVerification --study ID` reads an uploaded scan, stores every page's words and
rows and the verdict on every EDC value of the visit, raises a candidate query on the
discrepancy (or reuses the QueryAnalyzer's), and a re-run replaces without doubling anything.
An upload starts the source_verification workflow by itself. A few pages only: OCR is slow."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from agents.identity import agent_user
from agents.management.commands._run_progress import WAIT_GRACE_SECONDS, run_wait_seconds
from agents.models import AgentRun, Status
from agents.orchestrator import agent_run_start, workflow_start
from queries.models import Query
from sdv.models import SourceDocument, SourcePage, SourceVerification
from sdv.verification import samples
from sdv.verification.agent import TIME_LIMIT
from tests.sdv_helpers import PAGE_LINES, make_trial, page_png, require_tesseract, upload_file

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
V = SourceVerification.Verdict


@pytest.fixture
def trial():
    require_tesseract()
    return make_trial()


def upload(trial, content: bytes, name="lab-week4.png", user=None):
    client = APIClient()
    client.force_authenticate(user or trial.coordinator)
    response = client.post("/api/v1/source-documents/", {"study": trial.study.pk, "subject_id": "101-004",
                                                        "visit_oid": "SE.WEEK4", "file": upload_file(name, content)},
                           format="multipart")
    assert response.status_code == 201, response.json()
    return SourceDocument.objects.get(pk=response.json()["id"])


def run_agent(trial, config=None) -> dict:
    out = StringIO()
    args = ["run_agent", "DataVerification", "--study", str(trial.study.pk)]
    if config:
        args += ["--config", json.dumps(config)]
    call_command(*args, stdout=out)
    run = AgentRun.objects.filter(workflow="agent.DataVerification").latest("created_at")
    assert run.status == Status.SUCCEEDED, run.error
    assert f"waiting up to {TIME_LIMIT + WAIT_GRACE_SECONDS:g}s" in out.getvalue()
    return run.steps.get().output


def verdicts(document) -> dict:
    return {v.item.oid: v for v in SourceVerification.objects.filter(document=document).select_related("item")}


def test_the_agent_reads_a_rotated_blurred_scan_and_judges_every_value_of_the_visit(trial, media):
    scan = page_png(degradation=samples.Degradation(angle=2.5, blur=0.8))
    document = upload(trial, scan)
    output = run_agent(trial)

    assert (output["documents"], output["pages"], output["failed"], output["queries_raised"]) == (1, 1, 0, 1)
    document.refresh_from_db()
    assert (document.status, document.text_source, document.agent_version) == ("extracted", "ocr", "1")
    page = SourcePage.objects.get(document=document)
    assert "deskew" in page.steps and abs(page.skew + 2.5) < 0.5  # straightened by about the angle it was turned
    assert page.mean_confidence > 60 and len(page.words) > 40
    assert {r["name"] for r in page.rows} >= {"Haemoglobin", "K+", "Creatinine", "Glucose (fasting)", "SGPT"}

    found = verdicts(document)
    assert {oid: v.verdict for oid, v in found.items()} == {
        "LB.HGB": V.VERIFIED,  # 13.5 g/dL on the page is the EDC's 135 g/L
        "LB.K": V.DISCREPANCY,  # 5.4 on the page, 4.5 in the EDC
        "I.CREAT": V.VERIFIED, "LB.GLUC": V.VERIFIED, "I.ALT": V.VERIFIED,  # ALT printed as SGPT
        "VS.PULSE": V.NOT_FOUND}
    hgb, potassium = found["LB.HGB"], found["LB.K"]
    assert (hgb.source_value, hgb.source_unit, hgb.edc_value, hgb.edc_unit, hgb.analyte) == (
        "13.5", "g/dL", "135", "g/L", "HGB")
    assert "g/dL -> g/L" in hgb.explanation and hgb.page == 1 and hgb.confidence > 0.6
    x0, y0, x1, y1 = hgb.bbox
    assert 0 <= x0 < x1 <= page.width and 0 <= y0 < y1 <= page.height
    assert (potassium.source_value, potassium.edc_value, potassium.agent_verdict) == ("5.4", "4.5", V.DISCREPANCY)
    assert found["VS.PULSE"].bbox is None and found["VS.PULSE"].source_value == ""

    # A candidate query, in neutral words, naming the item, the EDC value and the page
    query = potassium.query
    assert (query.state, query.origin, query.rule_code, query.category, query.severity, query.data_point) == (
        Query.State.CANDIDATE, Query.Origin.RULE, "SDV.SOURCE", Query.Category.INCONSISTENCY, Query.Severity.CRITICAL,
        trial.points["LB.K"])
    assert "Potassium" in query.text and "4.5 mmol/L" in query.text and f"document {document.pk}, page 1" in query.text
    assert "5.4" not in query.text  # never the value the site should enter
    assert query.created_by == agent_user("DataVerification")
    # its evidence (the page, the value read there with its box, the EDC value) is the verdict it links to
    evidence = query.source_verifications.get()
    assert (evidence, evidence.page, evidence.source_value, evidence.edc_value) == (potassium, 1, "5.4", "4.5")
    assert evidence.bbox and evidence.row_bbox and evidence.confidence > 0.6

    # Everything read is in the Part 11 trail, attributed to the agent
    agent = agent_user("DataVerification")
    page_history = page.history.get()
    assert (page_history.history_user, page_history.agent_version) == (agent, "1")
    assert page_history.words == page.words
    assert page_history.history_change_reason.startswith("Read by DataVerification v1 (run ")
    assert all(h.history_user == agent for v in found.values() for h in v.history.all())
    # the data points themselves are left to the CRA: nothing is verified without a person
    trial.points["LB.HGB"].refresh_from_db()
    assert trial.points["LB.HGB"].sdv_state == "to_verify"


def test_a_second_run_replaces_the_verdicts_and_raises_no_second_query(trial, media):
    document = upload(trial, page_png())
    run_agent(trial)
    first = {oid: (v.pk, v.verdict, v.history.count()) for oid, v in verdicts(document).items()}
    pages = SourcePage.objects.get(document=document).history.count()

    output = run_agent(trial, {"reread": True})

    assert output["documents"] == 1 and output["queries_raised"] == 0 and output["queries_linked"] == 0
    again = {oid: (v.pk, v.verdict, v.history.count()) for oid, v in verdicts(document).items()}
    assert again == first  # the same rows, the same verdicts, no history row where nothing changed
    assert SourceVerification.objects.filter(document=document).count() == len(first)
    assert SourcePage.objects.get(document=document).history.count() == pages + 1  # the re-read is recorded
    assert Query.objects.filter(data_point=trial.points["LB.K"]).count() == 1
    # a run with nothing new to read reads nothing
    assert run_agent(trial)["documents"] == 0


def test_the_agent_reuses_an_active_query_of_the_query_analyzer_on_the_same_data_point(trial, media):
    from studies.audit import set_audit

    analyzer = Query(study=trial.study, site=trial.site, subject=trial.subject, data_point=trial.points["LB.K"],
                     origin=Query.Origin.RULE, rule_code="RNG-LB.K", state=Query.State.OPEN,
                     text="Potassium (Laboratory, Week 4): the recorded value 4.5 mmol/L is outside the range.")
    set_audit(analyzer, actor=agent_user("QueryAnalyzer"), reason="test set-up")
    analyzer.save()
    document = upload(trial, page_png())

    output = run_agent(trial)

    assert (output["queries_raised"], output["queries_linked"]) == (0, 1)
    assert verdicts(document)["LB.K"].query == analyzer
    assert Query.objects.filter(data_point=trial.points["LB.K"]).count() == 1


def test_an_upload_starts_the_source_verification_workflow(trial, media, settings):
    settings.SDV_VERIFY_ON_UPLOAD = True
    from agents.worker import in_process_worker
    from config.celery_app import app

    with in_process_worker(app):
        document = upload(trial, samples.lab_report_pdf_text(PAGE_LINES, subject_id="101-004", visit="Week 4",
                                                             collected="2025-03-04"), name="report.pdf")
        import time

        for _ in range(300):
            run = AgentRun.objects.filter(workflow="source_verification").first()
            if run is not None and run.is_finished:
                break
            time.sleep(0.1)
    from agents.models import Event
    assert run is not None, list(Event.objects.values())
    assert (run.status, run.trigger, run.study_id) == (Status.SUCCEEDED, "event", trial.study.pk)
    document.refresh_from_db()
    assert (document.status, document.text_source) == ("extracted", "text_layer")
    assert verdicts(document)["LB.HGB"].verdict == V.VERIFIED


def test_without_tesseract_the_run_fails_saying_so_and_the_document_waits(trial, media, settings):
    settings.TESSERACT_CMD = "/nonexistent/tesseract"
    document = upload(trial, page_png())
    with pytest.raises(CommandError, match="tesseract is not installed"):
        call_command("run_agent", "DataVerification", "--study", str(trial.study.pk), stdout=StringIO())
    document.refresh_from_db()
    assert document.status == "uploaded" and not SourcePage.objects.exists()
    assert not SourceVerification.objects.exists()


def test_run_agent_waits_for_the_time_limit_of_the_steps(trial):
    run = agent_run_start(agent="DataVerification", study_id=trial.study.pk)
    assert run_wait_seconds(run) == TIME_LIMIT + WAIT_GRACE_SECONDS
    workflow = workflow_start(name="source_verification", study_id=trial.study.pk)
    assert run_wait_seconds(workflow) == 600 + WAIT_GRACE_SECONDS


def test_a_run_takes_the_documents_that_fit_its_time_limit_and_leaves_the_rest_for_the_next(trial, media, settings):
    """However many pages are queued, a run bounds itself to its time limit: here a limit that fits
    one page takes the first document, leaves the second uploaded and publishes
    source_document.pending for it (which starts the next run)."""
    from agents.models import Event
    from sdv.verification.agent import PENDING_EVENT, SECONDS_PER_PAGE, DataVerificationAgent

    settings.SDV_OCR_WORKERS = 1
    first = upload(trial, samples.lab_report_pdf_text(PAGE_LINES, subject_id="101-004", visit="Week 4",
                                                      collected="2025-03-04"), name="first.pdf")
    second = upload(trial, samples.lab_report_pdf_text(PAGE_LINES, subject_id="101-004", visit="Week 4",
                                                       collected="2025-03-05"), name="second.pdf")
    limit = 1.1 * SECONDS_PER_PAGE / 0.8  # one page fits, two do not
    step = agent_run_start(agent="DataVerification", study_id=trial.study.pk).steps.get()
    assert step.input["study_id"] == trial.study.pk
    step.policy = {"time_limit": limit}

    output = DataVerificationAgent().run(step=step)

    assert (output["documents"], output["pages"], output["left_for_next_run"]) == (1, 1, 1)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("extracted", "uploaded")
    assert not SourceVerification.objects.filter(document=second).exists()
    event = Event.objects.get(type=PENDING_EVENT)
    assert (event.study_id, event.payload, event.source_step) == (trial.study.pk, {"documents": [second.pk]}, step)
    # the next run (no limit but the agent's own) takes what was left
    step.policy = {}
    assert DataVerificationAgent().run(step=step)["documents"] == 1
    second.refresh_from_db()
    assert second.status == "extracted"


def test_a_change_of_the_sdv_plan_starts_the_source_verification_workflow(trial, media):
    """RiskAssessment publishes sdv.plan_updated when it re-plans a study with documents; the
    source_verification workflow is subscribed to it (dispatched here by the service a worker runs)."""
    from agents.events import event_dispatch, event_publish

    upload(trial, page_png())
    event = event_publish(type="sdv.plan_updated", study_id=trial.study.pk, payload={"sites": [trial.site.pk]})

    runs = event_dispatch(event_id=event.pk)

    assert [(r.workflow, r.trigger, r.study_id) for r in runs] == [("source_verification", "event", trial.study.pk)]
    assert [s.agent for s in runs[0].steps.all()] == ["DataVerification"]
