"""A real Chromium walks source data verification end to end: the CRA drops two scans on the visit
of the subject page, the DataVerification agent reads them on a real worker with real tesseract,
the CRA verifies haemoglobin beside its cropped source, confirms the potassium discrepancy, and the
data manager releases the candidate query the agent raised. Screenshots: tests/screenshots/sdv*.png."""

import re
import time

import pytest
from playwright.sync_api import expect

from queries.models import Query
from sdv.models import SourceDocument, SourceVerification
from sdv.verification import samples
from studies.models import DataPoint
from tests.conftest import SCREENSHOTS
from tests.sdv_helpers import PAGE_LINES, make_trial, page_png, require_tesseract

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/studies/")


def test_upload_agent_verify_discrepancy_query(live_server, browser_page, worker, media, tmp_path):
    require_tesseract()
    trial = make_trial()
    page = browser_page
    scan = tmp_path / "lab-week4.png"
    scan.write_bytes(page_png(degradation=samples.Degradation(angle=1.5, blur=0.7)))
    second = tmp_path / "lab-week4-page2.jpg"
    image = samples.lab_report_image(PAGE_LINES[2:], subject_id="101-004", visit="Week 4", collected="2025-03-04",
                                     dpi=200)
    second.write_bytes(samples.image_bytes(image, "jpeg", quality=70, dpi=200))

    # The CRA drops both scans on Week 4 of the subject page
    log_in(page, live_server, "cra.sdv")
    page.goto(f"{live_server.url}/subjects/{trial.subject.pk}/")
    zone = page.locator(f"[data-testid=documents-{trial.visit.pk}] form.dropzone")
    expect(zone).to_be_visible()
    zone.locator("input[type=file]").set_input_files([str(scan), str(second)])
    expect(zone.locator(".dropzone-status li")).to_have_count(2)
    page.screenshot(path=SCREENSHOTS / "sdv01_uploaded.png", full_page=True)
    page.wait_for_load_state("load")
    expect(page.locator(f"[data-testid=documents-{trial.visit.pk}] .document-list li")).to_have_count(2)
    assert SourceDocument.objects.filter(visit=trial.visit, status="uploaded").count() == 2

    # ... opens the visit's SDV workspace and has the agent read them
    page.locator(f"[data-testid=documents-{trial.visit.pk}]").get_by_role("link", name="SDV workspace").click()
    expect(page.get_by_role("heading", name=re.compile("SDV: 101-004, Week 4"))).to_be_visible()
    page.get_by_role("button", name="Read the documents waiting").click()
    for _ in range(120):
        if SourceDocument.objects.filter(visit=trial.visit, status="uploaded").count() == 0:
            break
        time.sleep(0.5)
    page.reload()
    hgb_row = page.locator(f"#dp-{trial.points['LB.HGB'].pk}")
    expect(hgb_row).to_contain_text("Verified")
    expect(hgb_row.locator("img.sdv-crop")).to_be_visible()
    crop = f"#dp-{trial.points['LB.HGB'].pk} img.sdv-crop"
    page.wait_for_function(f"document.querySelector('{crop}').complete && "
                           f"document.querySelector('{crop}').naturalWidth > 200")
    page.screenshot(path=SCREENSHOTS / "sdv02_workspace.png", full_page=True)

    # One click verifies haemoglobin (the row is swapped in place)
    hgb_row.get_by_role("button", name="Verify").click()
    expect(page.locator(f"#dp-{trial.points['LB.HGB'].pk}")).to_contain_text("Confirmed by Chloé Roux")
    point = DataPoint.objects.get(pk=trial.points["LB.HGB"].pk)
    assert point.sdv_state == "verified" and point.history.first().history_user == trial.cra

    # The potassium discrepancy: the CRA confirms it; the agent's candidate query waits for data management
    k_row = page.locator(f"#dp-{trial.points['LB.K'].pk}")
    expect(k_row).to_contain_text("Discrepancy")
    expect(k_row.get_by_test_id("candidate-query")).to_be_visible()
    k_row.get_by_role("button", name="Flag").click()
    expect(page.locator(f"#dp-{trial.points['LB.K'].pk}")).to_contain_text("Confirmed by Chloé Roux")
    page.screenshot(path=SCREENSHOTS / "sdv03_verified_and_flagged.png", full_page=True)
    potassium = SourceVerification.objects.get(data_point=trial.points["LB.K"], document__isnull=False,
                                               verdict="discrepancy")
    assert (potassium.review, potassium.verified_by) == ("confirmed", trial.cra)
    assert DataPoint.objects.get(pk=trial.points["LB.K"].pk).sdv_state == "discrepancy"
    page.get_by_role("button", name="Log out").click()

    # The data manager opens the query from the workspace and releases it to the site
    log_in(page, live_server, "dm.sdv")
    page.goto(f"{live_server.url}/sdv/visits/{trial.visit.pk}/")
    page.locator(f"#dp-{trial.points['LB.K'].pk}").get_by_role("link", name=re.compile(r"^Query \d+$")).click()
    expect(page.locator("#query-state")).to_have_text("Candidate")
    expect(page.locator("body")).to_contain_text("does not match the source document")
    page.locator("#form-release").get_by_role("button", name="Release").click()
    expect(page.locator("#query-state")).to_have_text("Open")
    page.screenshot(path=SCREENSHOTS / "sdv04_query_released.png", full_page=True)
    query = Query.objects.get(data_point=trial.points["LB.K"])
    assert (query.state, query.rule_code, query.origin) == ("open", "SDV.SOURCE", "rule")
    assert [(h.state, h.history_user.username) for h in query.history.order_by("history_date")] == [
        ("candidate", "agent.DataVerification"), ("open", "dm.sdv")]
