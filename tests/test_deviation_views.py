"""The deviation screens: the log per study and site (filters, sort, bulk review), the deviation
page and its forms, reporting one, the dashboard, root causes, CAPA, periodic reports and the
downloads; links from the study, site and subject pages; scope (another site's deviation is a 404);
and the demo, whose deviations PatternRecognition finds from its plan. One browser test drives the
bulk review and a re-coding in a real Chromium."""

import datetime
import io
import re
from io import StringIO

import pytest
from django.core.management import call_command
from openpyxl import load_workbook
from playwright.sync_api import expect

from deviations.models import Capa, ComplianceReport, DetectionPass, Deviation, DeviationPlan
from deviations.reporting import compliance_report_create
from studies.models import Role, Study
from tests.conftest import SCREENSHOTS
from tests.scoping import build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return build_world()


def login(client, world, role):
    client.force_login(world.users[role])
    return client


def test_every_page_of_the_cluster_opens_for_a_data_manager(client, world):
    study, a1 = world.studies["A"], world.sites["A1"]
    login(client, world, Role.DATA_MANAGER)
    report, _ = compliance_report_create(study=study, actor=world.users[Role.DATA_MANAGER],
                                         period_start=datetime.date(2025, 1, 1), period_end=datetime.date(2025, 3, 31))
    for url in (f"/studies/{study.pk}/deviations/", f"/studies/{study.pk}/sites/{a1.site.pk}/deviations/",
                f"/deviations/{a1.deviation.pk}/", f"/studies/{study.pk}/deviations/dashboard/",
                f"/studies/{study.pk}/deviations/root-causes/", f"/studies/{study.pk}/capas/",
                f"/studies/{study.pk}/deviations/reports/"):
        answer = client.get(url)
        assert answer.status_code == 200, url
    page = client.get(f"/studies/{study.pk}/deviations/").content.decode()
    assert "Deviation at A1" in page and "Deviation at A2" in page and "Run PatternRecognition" in page
    assert f"report-{report.pk}" in client.get(f"/studies/{study.pk}/deviations/reports/").content.decode()
    assert "Deviation at A1" not in client.get(f"/studies/{study.pk}/sites/{world.sites['A2'].site.pk}"
                                               "/deviations/").content.decode()


def test_the_study_site_and_subject_pages_link_to_the_deviations(client, world):
    study, a1 = world.studies["A"], world.sites["A1"]
    login(client, world, Role.DATA_MANAGER)
    detail = client.get(f"/studies/{study.pk}/").content.decode()
    assert f'href="/studies/{study.pk}/deviations/"' in detail
    assert f'href="/studies/{study.pk}/sites/{a1.site.pk}/deviations/">1<' in detail
    subject = client.get(f"/subjects/{a1.subject.pk}/").content.decode()
    assert f'href="/deviations/{a1.deviation.pk}/"' in subject
    risk = client.get(f"/studies/{study.pk}/risk/sites/{a1.site.pk}/").content.decode()
    assert f'/studies/{study.pk}/sites/{a1.site.pk}/deviations/' in risk


def test_site_staff_see_their_site_only_and_cannot_review(client, world):
    study = world.studies["A"]
    login(client, world, Role.SITE_COORDINATOR)
    page = client.get(f"/studies/{study.pk}/deviations/").content.decode()
    assert "Deviation at A1" in page and "Deviation at A2" not in page and 'id="bulk-actions"' not in page
    assert client.get(f"/deviations/{world.sites['A2'].deviation.pk}/").status_code == 404
    assert client.get(f"/studies/{study.pk}/sites/{world.sites['A2'].site.pk}/deviations/").status_code == 404
    assert client.get(f"/studies/{study.pk}/deviations/reports/").status_code == 404
    deviation = world.sites["A1"].deviation
    client.post(f"/deviations/{deviation.pk}/", {"action": "review", "reason": "mine"})
    deviation.refresh_from_db()
    assert deviation.status == "open"
    assert client.get(f"/studies/{study.pk}/deviations/listing.xpt").status_code == 404


def test_the_log_filters_and_sorts(client, world):
    study = world.studies["A"]
    login(client, world, Role.DATA_MANAGER)
    page = client.get(f"/studies/{study.pk}/deviations/", {"site": world.sites["A2"].site.number}).content.decode()
    assert "Deviation at A2" in page and "Deviation at A1" not in page
    page = client.get(f"/studies/{study.pk}/deviations/", {"sort": "subject"}).content.decode()
    assert page.index("SUBJ-A1") < page.index("SUBJ-A2")
    page = client.get(f"/studies/{study.pk}/deviations/", {"sort": "-subject"}).content.decode()
    assert page.index("SUBJ-A2") < page.index("SUBJ-A1")
    assert "No deviation matches" in client.get(f"/studies/{study.pk}/deviations/",
                                                {"category": "eligibility"}).content.decode()


def test_a_cra_reports_a_deviation_and_a_data_manager_bulk_reviews(client, world):
    study, a1 = world.studies["A"], world.sites["A1"]
    login(client, world, Role.CRA)
    answer = client.post(f"/studies/{study.pk}/deviations/new/", {
        "subject": a1.subject.pk, "category": "informed_consent", "occurred_on": "2025-02-01",
        "description": "Re-consent to protocol v3 not obtained",
        "dvdecod": "WRONG INFORMED CONSENT/ASSENT VERSION SIGNED"})
    reported = Deviation.objects.get(description="Re-consent to protocol v3 not obtained")
    assert answer.status_code == 302 and answer["Location"] == f"/deviations/{reported.pk}/"
    assert (reported.reported_by, reported.dvdecod, reported.coding_by_person) == (
        world.users[Role.CRA], "WRONG INFORMED CONSENT/ASSENT VERSION SIGNED", True)
    client.force_login(world.users[Role.DATA_MANAGER])
    client.post(f"/studies/{study.pk}/deviations/bulk/", {"ids": [reported.pk, a1.deviation.pk],
                                                          "transition": "review", "reason": "Weekly review"})
    assert set(Deviation.objects.filter(pk__in=[reported.pk, a1.deviation.pk]).values_list("status", flat=True)) == {
        "under_review"}
    assert reported.history.latest("history_date").history_change_reason == "Weekly review"
    client.post(f"/deviations/{reported.pk}/", {"action": "close", "reason": "Re-consented", "resolution": "confirmed"})
    reported.refresh_from_db()
    assert (reported.status, reported.resolution) == ("closed", "confirmed")


def test_the_listing_downloads_follow_the_filters(client, world):
    study = world.studies["A"]
    login(client, world, Role.DATA_MANAGER)
    xlsx = client.get(f"/studies/{study.pk}/deviations/listing.xlsx", {"site": world.sites["A2"].site.number})
    rows = list(load_workbook(io.BytesIO(xlsx.content))["Listing"].iter_rows(values_only=True))
    assert [r[1] for r in rows[1:]] == ["SUBJ-A2"]
    pdf = client.get(f"/studies/{study.pk}/deviations/listing.pdf")
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
    assert client.get(f"/studies/{study.pk}/deviations/listing.xpt").content.startswith(b"HEADER RECORD")


def test_a_capa_is_opened_completed_and_signed_reports_need_the_password(client, world):
    study, a1 = world.studies["A"], world.sites["A1"]
    login(client, world, Role.DATA_MANAGER)
    dm = world.users[Role.DATA_MANAGER]
    client.post(f"/studies/{study.pk}/capas/", {
        "site": a1.site.pk, "category": "visit_window", "title": "Visit reminders", "corrective_action": "Call",
        "preventive_action": "SMS reminders", "owner": dm.pk, "due_on": "2030-01-01", "reason": "Pattern"})
    capa = Capa.objects.get(title="Visit reminders")
    client.post(f"/capas/{capa.pk}/", {"action": "update", "status": "completed", "reason": "Reminders in place"})
    capa.refresh_from_db()
    assert capa.status == "completed" and capa.completed_on == datetime.date.today()
    client.post(f"/capas/{capa.pk}/", {"action": "check"})
    capa.refresh_from_db()
    assert capa.effectiveness == "too_early"
    report, _ = compliance_report_create(study=study, actor=dm, period_start=datetime.date(2025, 1, 1),
                                         period_end=datetime.date(2025, 3, 31))
    client.post(f"/studies/{study.pk}/deviations/reports/", {"report": report.pk, "password": "wrong",
                                                             "meaning": "reviewed"})
    assert not ComplianceReport.objects.get(pk=report.pk).signed_at
    client.post(f"/studies/{study.pk}/deviations/reports/", {"report": report.pk, "password": "pw-for-tests",
                                                             "meaning": "reviewed"})
    report.refresh_from_db()
    assert report.is_signed and report.signed_name == dm.get_full_name()


def test_the_demo_shows_deviations_detected_from_its_plan():
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())
    study = Study.objects.get(protocol_id="TRIALOPS-DEMO-001")
    assert DeviationPlan.objects.filter(study=study).count() == 1
    detected = Deviation.objects.filter(study=study, source="detected")
    assert {(d.subject.subject_id, d.rule) for d in detected} == {
        ("102-003", "informed_consent.after_first_visit"), ("103-005", "visit_window.out_of_window"),
        ("104-002", "visit_window.out_of_window")}
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())
    assert Deviation.objects.filter(study=study).count() == 8 and DeviationPlan.objects.filter(study=study).count() == 1
    assert DetectionPass.objects.filter(study=study).latest("started_at").counts["totals"]["created"] == 0


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_data_manager_reviews_in_bulk_and_recodes_in_the_browser(world, live_server, browser_page):
    page, study, a1 = browser_page, world.studies["A"], world.sites["A1"]
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(world.users[Role.DATA_MANAGER].username)
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/studies/{study.pk}/")
    page.locator("#deviations-link").click()
    expect(page.locator("#deviations tbody tr")).to_have_count(2)
    page.get_by_label(f"Select deviation {a1.deviation.pk}").check()
    page.get_by_label(f"Select deviation {world.sites['A2'].deviation.pk}").check()
    page.locator("#b-reason").fill("Weekly review")
    page.locator("#bulk-apply").click()
    expect(page.locator(".messages")).to_contain_text("2 deviation(s): review done")
    page.screenshot(path=str(SCREENSHOTS / "dv1-log.png"), full_page=True)
    page.get_by_role("link", name=str(a1.deviation.pk), exact=True).click()
    page.locator("#c-dvdecod").select_option("OUT OF WINDOW - EFFICACY ASSESSMENT")
    page.locator("#c-importance").select_option("important")
    page.locator("#c-reason").fill("Primary endpoint visit")
    page.get_by_role("button", name="Re-code").click()
    expect(page.locator("#dvdecod")).to_contain_text("OUT OF WINDOW - EFFICACY ASSESSMENT")
    expect(page.locator("#history")).to_contain_text("Primary endpoint visit")
    page.screenshot(path=str(SCREENSHOTS / "dv2-deviation.png"), full_page=True)
    a1.deviation.refresh_from_db()
    assert (a1.deviation.status, a1.deviation.importance, a1.deviation.importance_by_person) == (
        "under_review", "important", True)
    assert re.search(r"/deviations/\d+/$", page.url)


@pytest.mark.parametrize("target", ["//evil.example/phish", "/\\evil.example", "https://evil.example/"])
def test_bulk_review_never_redirects_to_another_site(client, world, target):
    study, a1 = world.studies["A"], world.sites["A1"]
    login(client, world, Role.DATA_MANAGER)
    answer = client.post(f"/studies/{study.pk}/deviations/bulk/", {
        "ids": [a1.deviation.pk], "transition": "review", "reason": "Weekly review", "next": target})
    assert answer.status_code == 302 and answer["Location"] == f"/studies/{study.pk}/deviations/"
    a1.deviation.refresh_from_db()
    assert a1.deviation.status == "under_review"
