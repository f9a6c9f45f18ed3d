"""The monitoring plan's screens and documents: the plan view (calendar per monitor by week and
month, map data, load per week, breaches in red), a CRA's own calendar, the .ics feed (parsed
back with icalendar), the confirmation and follow-up letters (PDF, read back with pypdf, in the
site's language) and the visit report form with the site's SDV progress; a real Chromium draws the
Leaflet map with no tile server."""

import datetime
import io
import re
from pathlib import Path

import pytest
from django.test import Client
from icalendar import Calendar
from pypdf import PdfReader

from sdv.monitoring.letters import LANGUAGES, TEXT
from sdv.monitoring.models import Monitor, MonitoringVisit, VisitReport
from sdv.monitoring.plan_import import monitoring_plan_import
from sdv.monitoring.services import monitoring_plan_schedule, monitoring_visit_cancel
from sdv.monitoring.views import ics_token
from sdv.sdv_plan import sdv_plan_update
from studies.audit import set_audit
from studies.models import Role, StudyMembership
from studies.services import membership_grant
from tests.conftest import SCREENSHOTS
from tests.factories import (
    DataPointFactory,
    FormDefinitionFactory,
    ItemDefinitionFactory,
    SiteFactory,
    StudyFactory,
    SubjectFactory,
    SubjectVisitFactory,
    UserFactory,
)

PLAN = Path(__file__).parent / "data" / "monitoring" / "plan_small.json"
TODAY = datetime.date(2026, 3, 2)


def planned_study():
    study = StudyFactory(protocol_id="MON-UI")
    languages = {"701": "de", "702": "de", "703": "pl", "704": "ja"}
    for number, language in languages.items():
        SiteFactory(study=study, number=number, name=f"Site {number}", language=language)
    sponsor = UserFactory(username="sponsor.ui")
    membership_grant(user=sponsor, study=study, role=Role.SPONSOR)
    site_user = UserFactory(username="sc.ui")
    membership_grant(user=site_user, study=study, role=Role.SITE_COORDINATOR, site=study.sites.get(number="701"))
    monitoring_plan_import(study=study, raw=PLAN.read_bytes(), actor=sponsor)
    monitoring_plan_schedule(study=study, actor=sponsor, today=TODAY, time_limit=3)
    anna = Monitor.objects.get(study=study, user__username="cra.anna").user
    anna.set_password("pw-for-tests")
    anna.save()
    return study, sponsor, anna


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_plan_view_shows_calendars_map_load_and_breaches_in_red():
    study, sponsor, _anna = planned_study()
    client = logged_in(sponsor)
    week = client.get(f"/studies/{study.pk}/monitoring/?view=week&at=2026-03-02")
    assert week.status_code == 200
    html = week.content.decode()
    first_week = MonitoringVisit.objects.filter(study=study, date__lt="2026-03-09")
    assert html.count('data-testid="visit"') == first_week.count() > 0
    assert 'data-testid="monitor-cra.anna"' in html and 'data-testid="monitor-cra.jan"' in html
    assert 'id="breach-count">0<' in html and 'id="load"' in html and 'id="map-data"' in html
    # The load: on-site days per monitor and ISO week of the horizon, as stored.
    for username in ("cra.anna", "cra.jan"):
        row = re.search(rf'<tr data-testid="load-{re.escape(username)}">(.*?)</tr>', html, re.S).group(1)
        shown = [int(days) for days in re.findall(r'data-days="(\d+)"', row)]
        mondays = [TODAY + datetime.timedelta(weeks=w) for w in range(9)]
        stored = [sum(v.days for v in MonitoringVisit.objects.filter(
            study=study, monitor__user__username=username, kind="on_site", date__gte=a, date__lt=b))
            for a, b in zip(mondays, mondays[1:], strict=False)]
        assert shown == stored, username
        assert sum(stored) > 0 or username == "cra.jan"  # jan (CZ only) has the remote visits of 704
    month = client.get(f"/studies/{study.pk}/monitoring/?view=month&at=2026-03-15").content.decode()
    assert "March 2026" in month
    assert month.count('data-testid="visit"') == MonitoringVisit.objects.filter(
        study=study, date__gte="2026-02-23", date__lt="2026-04-06").count()
    # Cancelling the only on-site visit of a window leaves a breach: shown, in red.
    visit = MonitoringVisit.objects.filter(study=study, site__number="701", kind="on_site").order_by("date").first()
    monitoring_visit_cancel(visit=visit, actor=sponsor, reason="Site closed")
    html = client.get(f"/studies/{study.pk}/monitoring/?at=2026-03-09").content.decode()
    assert 'class="value breach-text" id="breach-count">1<' in html or 'id="breach-count">1<' in html
    assert "frequency_on_site" in html and "breach-text" in html
    # Site staff have no plan view (they read their own site's visits in the API), nor has anyone
    # outside the study.
    site_user = study.memberships.get(role=Role.SITE_COORDINATOR).user
    assert logged_in(site_user).get(f"/studies/{study.pk}/monitoring/").status_code == 404
    assert logged_in(UserFactory(username="nobody")).get(f"/studies/{study.pk}/monitoring/").status_code == 404


@pytest.mark.django_db
def test_a_cra_sees_their_calendar_and_subscribes_to_an_ics_feed():
    study, _sponsor, anna = planned_study()
    client = logged_in(anna)
    page = client.get("/monitoring/calendar/?view=month&at=2026-03-01").content.decode()
    own = MonitoringVisit.objects.filter(monitor__user=anna, date__gte="2026-02-23", date__lt="2026-04-06")
    assert page.count('data-testid="visit"') == own.count() > 0
    monitor = Monitor.objects.get(user=anna)
    feed_url = f"/monitoring/monitors/{monitor.pk}/{ics_token(monitor)}.ics"
    assert feed_url in page
    response = Client().get(feed_url)  # no login: the token stands in for it
    assert response.status_code == 200 and response["Content-Type"].startswith("text/calendar")
    events = Calendar.from_ical(response.content).walk("VEVENT")
    visits = {v.pk: v for v in MonitoringVisit.objects.filter(monitor=monitor)}
    assert len(events) == len(visits)
    for event in events:
        visit = visits[int(str(event["UID"]).split("-")[2].split("@")[0])]
        assert event.decoded("DTSTART") == visit.date and str(event["STATUS"]) == "TENTATIVE"
        assert f"site {visit.site.number}" in str(event["SUMMARY"])
    assert Client().get(f"/monitoring/monitors/{monitor.pk}/wrong-token.ics").status_code == 404
    # The feed stops with the monitor's access: their CRA membership withdrawn, or their account.
    membership = StudyMembership.objects.get(user=anna, study=study, role=Role.CRA)
    membership.is_active = False
    membership.save()
    assert Client().get(feed_url).status_code == 404
    assert feed_url not in client.get("/monitoring/calendar/").content.decode()  # nor offered any more
    membership.is_active = True
    membership.save()
    assert Client().get(feed_url).status_code == 200
    anna.is_active = False
    anna.save()
    assert Client().get(feed_url).status_code == 404


def sdv_data(site, *, n: int) -> list:
    visit = SubjectVisitFactory(subject=SubjectFactory(site=site))
    form = FormDefinitionFactory(study=site.study)
    return [DataPointFactory(visit=visit, item=ItemDefinitionFactory(study=site.study, form=form)) for _ in range(n)]


def verify(point, *, actor) -> None:
    point.refresh_from_db()
    point.sdv_state = "verified"
    set_audit(point, actor=actor, reason="verified at the visit")
    point.save()


def pdf_text(content: bytes) -> str:
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


@pytest.mark.django_db
def test_letters_are_pdfs_in_the_sites_language_and_the_report_keeps_the_sdv_progress():
    study, _sponsor, anna = planned_study()
    client = logged_in(anna)
    visit = MonitoringVisit.objects.filter(study=study, site__number="701", kind="on_site").order_by("date").first()
    confirmation = client.get(f"/monitoring/visits/{visit.pk}/letters/confirmation.pdf")
    assert confirmation["Content-Type"] == "application/pdf" and confirmation.content.startswith(b"%PDF")
    text = pdf_text(confirmation.content)
    assert TEXT["de"]["confirmation"] in text and visit.date.isoformat() in text and "Anna Berg" in text
    polish = MonitoringVisit.objects.filter(study=study, site__number="703").first()
    assert "Potwierdzenie wizyty monitorującej" in pdf_text(
        client.get(f"/monitoring/visits/{polish.pk}/letters/confirmation.pdf").content)
    for language in LANGUAGES:  # every language renders (CJK through reportlab's CID fonts)
        pdf = client.get(f"/monitoring/visits/{visit.pk}/letters/follow-up.pdf?lang={language}").content
        assert pdf.startswith(b"%PDF") and len(PdfReader(io.BytesIO(pdf)).pages) == 1
    # The site's SDV: one subject's four values selected (its first subject, fully), one verified.
    points = sdv_data(visit.site, n=4)
    sdv_plan_update(site=visit.site, actor=anna, reason="test plan")
    verify(points[0], actor=anna)
    # The report: saved, then submitted, with the SDV progress as it stood; the follow-up prints it.
    page = client.post(f"/monitoring/visits/{visit.pk}/", {"action": "save_report", "summary": "Consent forms checked.",
                                                           "findings": "One late AE entry.", "actions": "Enter AE"})
    assert page.status_code == 302
    report = VisitReport.objects.get(visit=visit)
    assert report.status == "draft" and report.author == anna
    assert {k: report.sdv_progress[k] for k in ("selected", "verified", "to_verify", "percent_verified")} == {
        "selected": 4, "verified": 1, "to_verify": 3, "percent_verified": 25.0}
    verify(points[1], actor=anna)  # verified during the visit: the submitted report has it
    client.post(f"/monitoring/visits/{visit.pk}/", {"action": "submit_report", "summary": "Consent forms checked.",
                                                    "findings": "One late AE entry.", "actions": "Enter AE"})
    report.refresh_from_db()
    assert report.status == "submitted" and report.history.first().history_change_reason == "Visit report submitted"
    assert (report.sdv_progress["verified"], report.sdv_progress["percent_verified"]) == (2, 50.0)
    verify(points[2], actor=anna)  # after submission: the report keeps what it said
    report.refresh_from_db()
    assert report.sdv_progress["verified"] == 2
    follow_up = pdf_text(client.get(f"/monitoring/visits/{visit.pk}/letters/follow-up.pdf").content)
    assert "Consent forms checked." in follow_up and TEXT["de"]["follow-up"] in follow_up
    detail = client.get(f"/monitoring/visits/{visit.pk}/").content.decode()
    assert 'id="sdv-progress"' in detail and "Submitted" in detail
    # Someone outside the study cannot read the visit or its letters.
    assert logged_in(UserFactory(username="outsider")).get(
        f"/monitoring/visits/{visit.pk}/letters/confirmation.pdf").status_code == 404


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_map_is_drawn_by_leaflet_with_no_tile_server(live_server, browser_page):
    study, sponsor, _anna = planned_study()
    sponsor.set_password("pw-for-tests")
    sponsor.save()
    page = browser_page
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("sponsor.ui")
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/studies/")
    page.goto(f"{live_server.url}/studies/{study.pk}/monitoring/?view=week&at=2026-03-02")
    page.wait_for_selector('#monitoring-map[data-ready="1"]')
    # Four sites, two homes and the trips, as SVG paths; no tile was requested.
    assert page.locator("#monitoring-map path.leaflet-interactive").count() >= 6
    assert page.locator("#monitoring-map img.leaflet-tile").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "monitoring-plan.png"), full_page=True)
