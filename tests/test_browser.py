"""A real Chromium walks the UI the way a site coordinator does: login, study list, study, subject,
the audit trail of one value, and a change with its reason. Screenshots go to tests/screenshots/."""

import datetime

import pytest

from queries.models import Query
from studies.models import DataPoint, Role
from studies.services import data_point_update, membership_grant
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
    VisitDefinitionFactory,
)

CHANGE_REASON = "Transcription error corrected against source"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def site_study():
    study = StudyFactory(protocol_id="CARD-301", name="Cardio Outcomes Trial", sponsor="Acme Pharma", phase="III")
    site = SiteFactory(study=study, number="101", name="Hopital Saint-Louis", country="FR", city="Paris")
    SiteFactory(study=study, number="201", name="Charite Berlin", country="DE", city="Berlin")
    coordinator = UserFactory(username="coord.a", first_name="Claire", last_name="Martin")
    membership_grant(user=coordinator, study=study, role=Role.SITE_COORDINATOR, site=site)

    screening = VisitDefinitionFactory(study=study, name="Screening", order=1, planned_day=-14)
    baseline = VisitDefinitionFactory(study=study, name="Baseline", order=2, planned_day=1)
    vitals = FormDefinitionFactory(study=study, name="Vital signs", oid="F.VS", order=1)
    systolic = ItemDefinitionFactory(study=study, form=vitals, oid="I.SYSBP", label="Systolic blood pressure",
                                     units="mmHg", order=1, critical=True)
    diastolic = ItemDefinitionFactory(study=study, form=vitals, oid="I.DIABP", label="Diastolic blood pressure",
                                      units="mmHg", order=2)
    pulse = ItemDefinitionFactory(study=study, form=vitals, oid="I.PULSE", label="Pulse", units="beats/min",
                                  range_low=30, range_high=200, order=3)

    subject = SubjectFactory(site=site, subject_id="101-001")
    for number in range(2, 8):
        SubjectFactory(site=site, subject_id=f"101-{number:03d}")
    SubjectVisitFactory(subject=subject, definition=screening, actual_date=datetime.date(2025, 1, 20))
    visit = SubjectVisitFactory(subject=subject, definition=baseline, actual_date=datetime.date(2025, 2, 3))
    point = DataPointFactory(visit=visit, item=systolic, raw_value="210", value_number=210,
                             sdv_state=DataPoint.SdvState.VERIFIED)
    point = data_point_update(data_point=point, raw_value="120", actor=coordinator, reason=CHANGE_REASON)
    DataPointFactory(visit=visit, item=diastolic, raw_value="80", value_number=80,
                     sdv_state=DataPoint.SdvState.TO_VERIFY)
    DataPointFactory(visit=visit, item=pulse, raw_value="72", value_number=72)
    Query.objects.create(study=study, site=site, subject=subject, data_point=point,
                         text="Systolic blood pressure 210 mmHg is above the expected range; please verify.")
    return study, subject, point


def test_a_site_coordinator_walks_from_login_to_the_audit_trail(live_server, browser_page, site_study):
    study, subject, point = site_study
    page = browser_page

    page.goto(f"{live_server.url}/studies/{study.pk}/")  # a deep link sends an anonymous user to login
    assert "/login/" in page.url
    page.get_by_label("Username").fill("coord.a")
    page.get_by_label("Password").fill("pw-for-tests")
    page.screenshot(path=SCREENSHOTS / "01_login.png", full_page=True)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/studies/{study.pk}/")  # back to the deep link

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Studies").click()
    page.wait_for_url(f"{live_server.url}/studies/")
    assert page.get_by_role("heading", name="Studies").is_visible()
    assert page.get_by_role("link", name="Cardio Outcomes Trial").is_visible()
    assert page.get_by_text("Claire Martin").is_visible()
    page.screenshot(path=SCREENSHOTS / "02_study_list.png", full_page=True)

    page.get_by_role("link", name="Cardio Outcomes Trial").click()
    assert page.get_by_role("heading", name="Cardio Outcomes Trial").is_visible()
    sites = page.locator("#sites")
    assert sites.get_by_text("Hopital Saint-Louis").is_visible()
    assert sites.get_by_text("Charite Berlin").count() == 0  # another site of the study stays invisible
    page.screenshot(path=SCREENSHOTS / "03_study.png", full_page=True)

    # The subject search swaps the table through htmx, without reloading the page.
    page.get_by_label("Subject id").fill("001")
    page.locator("#subjects").get_by_text("101-002").wait_for(state="detached")
    assert page.locator("#subjects tbody tr").count() == 1
    assert "q=001" in page.url  # pushed, so the filtered view can be bookmarked

    page.get_by_role("link", name="101-001").click()
    assert page.get_by_role("heading", name="Subject 101-001").is_visible()
    # is_visible() does not wait: under load the visit's rows may still be rendering (a CI run fell there)
    page.get_by_text("Systolic blood pressure").wait_for(state="visible")
    assert page.get_by_text("2025-02-03").is_visible()
    page.screenshot(path=SCREENSHOTS / "04_subject.png", full_page=True)

    page.locator("tr", has_text="Systolic blood pressure").get_by_role("link", name="History").click()
    history = page.locator("#history")
    assert history.get_by_text(CHANGE_REASON).is_visible()
    assert history.locator("tbody tr").count() == 2
    page.screenshot(path=SCREENSHOTS / "05_history.png", full_page=True)

    # A change without a reason is refused on the page; with a reason it lands in the audit trail.
    page.get_by_label("New value (mmHg)").fill("128")
    page.get_by_role("button", name="Save change").click()
    assert page.get_by_text("This field is required.").is_visible()
    page.screenshot(path=SCREENSHOTS / "06_change_refused.png", full_page=True)
    page.get_by_label("New value (mmHg)").fill("128")
    page.get_by_label("Reason for change").fill("Correction after query")
    page.get_by_role("button", name="Save change").click()
    assert page.get_by_text("Value changed to '128' (version 3).").is_visible()
    assert history.locator("tbody tr").count() == 3
    page.screenshot(path=SCREENSHOTS / "07_changed.png", full_page=True)

    point.refresh_from_db()
    assert (point.raw_value, point.version) == ("128", 3)
    assert point.history.latest().history_change_reason == "Correction after query"

    page.get_by_role("button", name="Log out").click()
    assert page.get_by_role("heading", name="Log in").is_visible()


def test_a_data_manager_sees_every_site_with_totals(live_server, browser_page, site_study):
    study, subject, point = site_study
    site_b = study.sites.get(number="201")
    for number in range(1, 4):
        SubjectFactory(site=site_b, subject_id=f"201-{number:03d}")
    data_manager = UserFactory(username="dm", first_name="Dana", last_name="Meyer")
    membership_grant(user=data_manager, study=study, role=Role.DATA_MANAGER)
    page = browser_page

    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("dm")
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="CARD-301").click()

    sites = page.locator("#sites")
    assert sites.get_by_text("Charite Berlin").is_visible() and sites.get_by_text("Hopital Saint-Louis").is_visible()
    assert sites.locator("tfoot").inner_text().split() == ["Total", "(2", "sites)", "10", "3", "1", "0"]  # no deviation
    page.get_by_label("Site").select_option(label="201 Charite Berlin")
    page.locator("#subjects").get_by_text("101-001").wait_for(state="detached")
    assert page.locator("#subjects tbody tr").count() == 3
    page.screenshot(path=SCREENSHOTS / "08_study_data_manager.png", full_page=True)
