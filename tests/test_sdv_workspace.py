"""The SDV workspace pages (server-rendered): progress per site, subject and visit; a visit's values
beside their cropped source with one-click verify, flag, query and manual SDV (also as HTMX row
swaps); uploading several files from the subject page; crops, page images and files scoped like
every page. Documents are text-layer PDFs here (read without OCR; the browser test uses OCR)."""

import io

import pytest
from django.urls import reverse
from PIL import Image

from agents.identity import agent_user
from sdv.documents import document_upload
from sdv.models import SourceDocument, SourceVerification
from sdv.verification import samples
from sdv.verification.services import document_store, documents_read
from studies.models import DataPoint
from tests.sdv_helpers import PAGE_LINES, make_trial, page_png, stored_files, upload_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def trial(media):
    trial = make_trial()
    pdf = samples.lab_report_pdf_text(PAGE_LINES, subject_id="101-004", visit="Week 4", collected="2025-03-04")
    trial.document, _ = document_upload(study=trial.study, subject_id="101-004", visit_oid="SE.WEEK4",
                                        upload=upload_file("report.pdf", pdf), actor=trial.coordinator)
    [read] = documents_read([trial.document])
    document_store(document=trial.document, read=read, actor=agent_user("DataVerification"), reason="test read")
    trial.by_item = {v.item.oid: v for v in SourceVerification.objects.filter(document=trial.document)}
    return trial


def test_the_visit_workspace_shows_each_value_beside_its_source(client, trial):
    client.force_login(trial.cra)
    response = client.get(reverse("sdv-visit", args=[trial.visit.pk]))
    assert response.status_code == 200
    items = response.context["items"]
    # the plan's values, critical first (potassium is critical)
    assert items[0]["point"].item.oid == "LB.K"
    text = response.text
    hgb = trial.by_item["LB.HGB"]
    assert reverse("sdv-crop", args=[hgb.pk]) in text
    assert "“Haemoglobin” 13.5 g/dL" in text and "0/6</strong> planned values verified" in text
    assert "A candidate query is with data management for review." in text  # the CRA does not see candidates
    crop = client.get(reverse("sdv-crop", args=[hgb.pk]))
    assert crop.status_code == 200 and crop["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(crop.content))
    assert 200 < image.width <= 900 and image.height < 150  # one row of the page, not the page
    page = client.get(reverse("sdv-page-image", args=[trial.document.pk, 1]))
    assert page.status_code == 200 and Image.open(io.BytesIO(page.content)).width == 1200


def test_one_click_verifies_and_the_progress_follows(client, trial):
    client.force_login(trial.cra)
    hgb = trial.by_item["LB.HGB"]
    response = client.post(reverse("sdv-verification-action", args=[hgb.pk]), {"action": "verify"})
    assert response.status_code == 302 and response["Location"].endswith(f"#dp-{hgb.data_point_id}")
    assert DataPoint.objects.get(pk=hgb.data_point_id).sdv_state == "verified"
    # HTMX: the row alone comes back, already showing who verified it
    glucose = trial.by_item["LB.GLUC"]
    row = client.post(reverse("sdv-verification-action", args=[glucose.pk]), {"action": "verify"},
                      HTTP_HX_REQUEST="true")
    assert row.status_code == 200 and row.text.strip().startswith(f'<tr id="dp-{glucose.data_point_id}"')
    assert "Confirmed by Chloé Roux" in row.text
    overview = client.get(reverse("sdv-overview", args=[trial.study.pk]))
    progress = [(r["site"].number, r["progress"]["verified"], r["progress"]["planned"])
                for r in overview.context["sites"]]
    assert progress == [("101", 2, 6)]  # the CRA sees site 101 only
    grid = client.get(reverse("sdv-site", args=[trial.study.pk, trial.site.pk]))
    assert "2/6" in grid.text and grid.context["totals"]["verified"] == 2
    site_page = client.get(reverse("site-risk", args=[trial.study.pk, trial.site.pk]))
    assert "2 of 6 planned" in site_page.text


def test_flagging_against_the_agent_needs_a_reason_and_says_so(client, trial):
    client.force_login(trial.cra)
    creatinine = trial.by_item["I.CREAT"]
    response = client.post(reverse("sdv-verification-action", args=[creatinine.pk]), {"action": "flag"}, follow=True)
    assert "needs a reason" in response.text
    creatinine.refresh_from_db()
    assert creatinine.review == ""
    client.post(reverse("sdv-verification-action", args=[creatinine.pk]),
                {"action": "flag", "reason": "Paper copy in the site file reads 98"})
    creatinine.refresh_from_db()
    assert (creatinine.verdict, creatinine.review) == ("discrepancy", "overridden")
    assert DataPoint.objects.get(pk=creatinine.data_point_id).sdv_state == "discrepancy"


def test_manual_sdv_of_a_value_without_a_document(client, trial):
    client.force_login(trial.cra)
    pulse = trial.points["VS.PULSE"]
    client.post(reverse("sdv-manual", args=[pulse.pk]), {"verdict": "verified"})
    pulse.refresh_from_db()
    assert pulse.sdv_state == "verified"
    assert SourceVerification.objects.get(data_point=pulse, document=None).verified_by == trial.cra


def test_a_changed_value_shows_it_is_no_longer_verified(client, trial):
    from studies.services import data_point_update

    client.force_login(trial.cra)
    hgb = trial.by_item["LB.HGB"]
    client.post(reverse("sdv-verification-action", args=[hgb.pk]), {"action": "verify"})
    data_point_update(data_point=trial.points["LB.HGB"], raw_value="134", actor=trial.coordinator,
                      reason="Re-entered from the lab report")
    text = client.get(reverse("sdv-visit", args=[trial.visit.pk])).text
    assert "Changed since the verdict (was 135): version 2 by coord.101" in text
    assert "Re-entered from the lab report" in text


def test_several_files_are_uploaded_from_the_subject_page(client, trial, media):
    client.force_login(trial.coordinator)
    subject_page = client.get(reverse("subject-detail", args=[trial.subject.pk]))
    assert 'class="dropzone"' in subject_page.text and "sdv/upload.js" in subject_page.text
    assert 'data-visit="SE.WEEK4"' in subject_page.text  # one drop zone per visit, and one for the subject
    response = client.post(reverse("sdv-upload"), {
        "study": trial.study.pk, "subject_id": "101-004", "visit_oid": "SE.WEEK4",
        "next": reverse("subject-detail", args=[trial.subject.pk]),
        "file": [upload_file("a.png", page_png()), upload_file("notes.txt", b"not a scan"),
                 upload_file("b.png", page_png(subject_id="101-004 ")),
                 ]}, follow=True)
    texts = [str(m) for m in response.context["messages"]]
    assert any(t.startswith("a.png: uploaded") for t in texts) and any(t.startswith("b.png: uploaded") for t in texts)
    assert any("notes.txt: " in t and "not a PDF, PNG, JPEG or TIFF" in t for t in texts)
    assert SourceDocument.objects.filter(visit=trial.visit).count() == 3  # the PDF and the two scans
    assert len(stored_files(media)) == 3


def test_workspace_crops_and_files_are_scoped(client, trial):
    hgb = trial.by_item["LB.HGB"]
    client.force_login(trial.other_coordinator)
    for url in (reverse("sdv-visit", args=[trial.visit.pk]), reverse("sdv-crop", args=[hgb.pk]),
                reverse("sdv-document-file", args=[trial.document.pk]),
                reverse("sdv-page-image", args=[trial.document.pk, 1]),
                reverse("sdv-site", args=[trial.study.pk, trial.site.pk])):
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("sdv-verification-action", args=[hgb.pk]), {"action": "verify"}).status_code == 404
    # site staff of the site see their documents, not the SDV workspace
    client.force_login(trial.coordinator)
    assert client.get(reverse("sdv-document-file", args=[trial.document.pk])).status_code == 200
    assert client.get(reverse("sdv-visit", args=[trial.visit.pk])).status_code == 404
    assert client.get(reverse("sdv-crop", args=[hgb.pk])).status_code == 404
    # a data manager reads the workspace but cannot verify
    client.force_login(trial.data_manager)
    assert client.get(reverse("sdv-visit", args=[trial.visit.pk])).status_code == 200
    client.post(reverse("sdv-verification-action", args=[hgb.pk]), {"action": "verify"})
    assert DataPoint.objects.get(pk=hgb.data_point_id).sdv_state == "to_verify"
