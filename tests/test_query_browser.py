"""A real Chromium walks a query's life through the UI: a CRA raises it on a data point, the site
coordinator answers it, the CRA closes it; the coordinator cannot open another site's query. Then
a data manager's inbox and the metrics dashboard. Screenshots go to tests/screenshots/ (q*.png).

Runs like tests/test_browser.py: pytest-django's live server, Debian's /usr/bin/chromium."""

import datetime
import re
from types import SimpleNamespace

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from queries.models import Query, QueryMessage
from studies.audit import set_audit
from studies.models import Role
from studies.services import cra_site_assign, membership_grant
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

QUERY_TEXT = ("Systolic blood pressure (I.SYSBP) at Baseline: the recorded value is 210 mmHg, above the expected "
              "range of 60-200 mmHg. Please verify it against the source document.")
ANSWER = "Checked against the source document: the value is 210 mmHg, as entered."
CLOSE_REASON = "Value confirmed against source"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def trial():
    """Sites 101 (London) and 201 (Boston); a CRA monitoring 101, its site coordinator, a data
    manager; subject 101-001 with a systolic blood pressure of 210 mmHg; an open query at 201."""
    study = StudyFactory(protocol_id="CARD-301", name="Cardio Outcomes Trial")
    site = SiteFactory(study=study, number="101", name="St Thomas' Hospital", country="GB", city="London",
                       timezone="Europe/London", language="en")
    other_site = SiteFactory(study=study, number="201", name="Boston General", country="US", city="Boston",
                             timezone="America/New_York", language="en")
    cra = UserFactory(username="cra.a", first_name="Carl", last_name="Reyes")
    coordinator = UserFactory(username="coord.a", first_name="Claire", last_name="Martin")
    data_manager = UserFactory(username="dm", first_name="Dana", last_name="Meyer")
    membership_grant(user=cra, study=study, role=Role.CRA)
    cra_site_assign(cra=cra, site=site)
    membership_grant(user=coordinator, study=study, role=Role.SITE_COORDINATOR, site=site)
    membership_grant(user=data_manager, study=study, role=Role.DATA_MANAGER)

    baseline = VisitDefinitionFactory(study=study, name="Baseline", order=1, planned_day=1)
    vitals = FormDefinitionFactory(study=study, name="Vital signs", oid="F.VS")
    sbp = ItemDefinitionFactory(study=study, form=vitals, oid="I.SYSBP", label="Systolic blood pressure",
                                units="mmHg", order=1)
    pulse = ItemDefinitionFactory(study=study, form=vitals, oid="I.PULSE", label="Pulse", units="beats/min",
                                  order=2, range_low=30, range_high=200)
    subject = SubjectFactory(site=site, subject_id="101-001")
    visit = SubjectVisitFactory(subject=subject, definition=baseline, actual_date=datetime.date(2025, 2, 3))
    point = DataPointFactory(visit=visit, item=sbp, raw_value="210", value_number=210)
    DataPointFactory(visit=visit, item=pulse, raw_value="72", value_number=72)

    other_subject = SubjectFactory(site=other_site, subject_id="201-001")
    other_visit = SubjectVisitFactory(subject=other_subject, definition=baseline)
    other_point = DataPointFactory(visit=other_visit, item=sbp, raw_value="250", value_number=250)
    other_query = Query(study=study, site=other_site, subject=other_subject, data_point=other_point,
                        text="Systolic blood pressure at Baseline: 250 mmHg. Please verify it against source.")
    set_audit(other_query, actor=data_manager, reason="test setup")
    other_query.save()
    return SimpleNamespace(**locals())


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/studies/")


def log_out(page) -> None:
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def test_a_query_is_raised_answered_and_closed_and_other_sites_stay_closed(live_server, browser_page, trial):
    page, study = browser_page, trial.study

    # The CRA raises the query from the study's inbox, on the data point
    log_in(page, live_server, "cra.a")
    page.get_by_role("link", name="Cardio Outcomes Trial").click()
    page.get_by_role("link", name="Inbox").click()
    expect(page.get_by_role("heading", name="Queries")).to_be_visible()
    page.get_by_role("link", name="Raise a query").click()
    page.get_by_label("Subject").select_option(label="101-001 (site 101)")
    page.get_by_role("button", name="Choose").click()
    page.get_by_label("Data point").select_option(label="Baseline · Vital signs · Systolic blood pressure = 210")
    page.get_by_label("Query text").fill(QUERY_TEXT)
    page.get_by_label("Category").select_option(label="Out of range")
    page.get_by_label("Severity").select_option(label="Major")
    page.screenshot(path=SCREENSHOTS / "q01_raise.png", full_page=True)
    page.get_by_role("button", name="Raise query").click()
    expect(page.locator("#query-state")).to_have_text("Open")
    query = Query.objects.get(study=study, site=trial.site)
    assert page.url == f"{live_server.url}/queries/{query.pk}/"
    page.screenshot(path=SCREENSHOTS / "q02_raised.png", full_page=True)
    log_out(page)

    # The site coordinator finds it in the inbox (open queries first) and answers it
    log_in(page, live_server, "coord.a")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Queries").click()
    rows = page.locator("#queries tbody tr")
    expect(rows).to_have_count(1)  # site 201's query is not in this inbox
    expect(rows.first).to_contain_text("101-001")
    page.screenshot(path=SCREENSHOTS / "q03_inbox_site.png", full_page=True)
    rows.first.get_by_role("link", name=str(query.pk), exact=True).click()
    expect(page.locator("#data-point")).to_contain_text("210 mmHg")
    expect(page.locator("#form-close")).to_have_count(0)
    page.get_by_label("Your answer").fill(ANSWER)
    page.get_by_role("button", name="Send answer").click()
    expect(page.locator("#query-state")).to_have_text("Answered")
    expect(page.locator("#thread")).to_contain_text(ANSWER)
    page.screenshot(path=SCREENSHOTS / "q04_answered.png", full_page=True)

    # Another site's query does not exist for them, by link or by typing its address
    response = page.goto(f"{live_server.url}/queries/{trial.other_query.pk}/")
    assert response.status == 404
    page.screenshot(path=SCREENSHOTS / "q05_other_site_404.png", full_page=True)
    page.goto(f"{live_server.url}/queries/")
    log_out(page)

    # The CRA closes it from the "Answered" tab with a reason and a resolution
    log_in(page, live_server, "cra.a")
    page.goto(f"{live_server.url}/studies/{study.pk}/queries/")
    page.locator(".state-tabs").get_by_role("link", name=re.compile(r"^Answered \d+$")).click()
    page.locator("#queries").get_by_role("link", name=str(query.pk), exact=True).click()
    page.get_by_label("Resolution").select_option(label="Data confirmed correct")
    page.get_by_label("Reason for closing").fill(CLOSE_REASON)
    page.get_by_role("button", name="Close query").click()
    expect(page.locator("#query-state")).to_have_text("Closed")
    expect(page.locator("#query-history")).to_contain_text(CLOSE_REASON)
    page.screenshot(path=SCREENSHOTS / "q06_closed.png", full_page=True)

    query.refresh_from_db()
    assert (query.state, query.resolution) == (Query.State.CLOSED, Query.Resolution.CONFIRMED_CORRECT)
    assert list(query.messages.values_list("kind", "author__username")) == [
        (QueryMessage.Kind.QUESTION, "cra.a"), (QueryMessage.Kind.ANSWER, "coord.a"),
        (QueryMessage.Kind.CLOSE, "cra.a")]
    assert [(h.state, h.history_user.username) for h in query.history.order_by("history_date")] == [
        ("open", "cra.a"), ("answered", "coord.a"), ("closed", "cra.a")]
    assert query.history.latest().history_change_reason == CLOSE_REASON
    trial.other_query.refresh_from_db()
    assert trial.other_query.state == Query.State.OPEN


def test_a_data_manager_sees_the_study_inbox_with_bulk_actions_and_the_metrics(live_server, browser_page, trial):
    page = browser_page
    now = timezone.now()
    answered = Query(study=trial.study, site=trial.site, subject=trial.subject, data_point=trial.point,
                     state=Query.State.ANSWERED, text=QUERY_TEXT, severity=Query.Severity.MAJOR,
                     created_at=now - datetime.timedelta(days=10), answered_at=now - datetime.timedelta(days=4),
                     due_date=(now - datetime.timedelta(days=3)).date())
    set_audit(answered, actor=trial.data_manager, reason="test setup")
    answered.save()
    log_in(page, live_server, "dm")
    page.goto(f"{live_server.url}/studies/{trial.study.pk}/queries/metrics/")
    expect(page.get_by_role("heading", name="Query metrics")).to_be_visible()
    expect(page.locator("#outstanding")).to_have_text("2")
    page.wait_for_function("() => Chart.getChart('chart-aging') !== undefined")  # the vendored Chart.js drew
    page.screenshot(path=SCREENSHOTS / "q07_metrics.png", full_page=True)

    page.get_by_role("link", name="inbox").click()
    # Wait for "load" (inbox.js, deferred): a box ticked before it runs is never counted.
    page.wait_for_url(f"{live_server.url}/studies/{trial.study.pk}/queries/")
    expect(page.locator("#queries tbody tr")).to_have_count(2)  # both sites
    page.get_by_label("Select all queries on this page").check()
    expect(page.locator("#bulk-selected")).to_have_text("2 selected")
    expect(page.get_by_label("New marking group")).to_be_hidden()  # only for "reassign"
    page.screenshot(path=SCREENSHOTS / "q08_inbox_data_manager.png", full_page=True)
    page.get_by_label("Reason (recorded in each query's audit trail)").fill("Resolved at the monitoring visit")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("Close: done on 2 queries.")).to_be_visible()
    expect(page.locator("#queries tbody tr")).to_have_text(["No query matches these filters."])
    for query in Query.objects.filter(study=trial.study):
        latest = query.history.latest()
        assert (query.state, latest.history_user.username, latest.history_change_reason) == (
            "closed", "dm", "Resolved at the monitoring visit")
