"""The query pages (issue 6 item 9): the inbox of each role (site staff their site, a CRA their
sites, data managers the study), its filters, sorting and bulk actions; the query page with the
thread, the data point and its history, and the forms of the transitions the user may make; raising
a query; the metrics page. Another site's query is a 404, as if it did not exist."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from queries.models import Query, QueryMessage
from studies.audit import set_audit
from studies.models import Role
from studies.services import data_point_update
from tests.scoping import build_world

pytestmark = pytest.mark.django_db


def neutral_text(point) -> str:
    return (f"{point.item.label} ({point.item.oid}) at {point.visit.definition.name}: the recorded value is "
            f"{point.raw_value} {point.item.units}. Please verify it against the source document.")


@pytest.fixture
def world():
    return build_world()


def listed(response) -> set[int]:
    assert response.status_code == 200
    return {query.pk for query in response.context["page"].object_list}


def add_query(world, key: str, **fields) -> Query:
    site_world = world.sites[key]
    query = Query(study=site_world.site.study, site=site_world.site, subject=site_world.subject,
                  data_point=site_world.data_point, text=neutral_text(site_world.data_point), **fields)
    set_audit(query, actor=world.users[Role.DATA_MANAGER], reason="test setup")
    query.save()
    return query


@pytest.mark.parametrize(("role", "sites"), [
    (Role.SITE_COORDINATOR, {"A1"}), (Role.INVESTIGATOR, {"A1"}), (Role.CRA, {"A1"}),
    (Role.DATA_MANAGER, {"A1", "A2"}), (Role.SPONSOR, {"A1", "A2"}), (Role.AUDITOR, {"A1", "A2"})])
def test_each_role_sees_the_queries_of_its_sites_only(client, world, role, sites):
    client.force_login(world.users[role])
    expected = {world.sites[key].query.pk for key in sites}
    assert listed(client.get(reverse("study-queries", args=[world.studies["A"].pk]), {"state": "all"})) == expected
    assert listed(client.get(reverse("query-inbox"), {"state": "all"})) == expected  # across studies


def test_candidates_are_in_the_data_managers_inbox_only(client, world):
    candidate = add_query(world, "A1", state=Query.State.CANDIDATE, origin=Query.Origin.RULE)
    url = reverse("study-queries", args=[world.studies["A"].pk])
    client.force_login(world.users[Role.DATA_MANAGER])
    response = client.get(url, {"state": "candidate"})
    assert listed(response) == {candidate.pk}
    assert "release" in response.context["bulk_actions"]
    for role in (Role.CRA, Role.SITE_COORDINATOR):
        client.force_login(world.users[role])
        assert candidate.pk not in listed(client.get(url, {"state": "all"}))
        assert client.get(reverse("query-detail", args=[candidate.pk])).status_code == 404


def test_site_staff_start_on_open_queries_and_reviewers_on_open_and_answered(client, world):
    answered = add_query(world, "A1", state=Query.State.ANSWERED)
    url = reverse("study-queries", args=[world.studies["A"].pk])
    client.force_login(world.users[Role.SITE_COORDINATOR])
    assert listed(client.get(url)) == {world.sites["A1"].query.pk}
    client.force_login(world.users[Role.CRA])
    assert listed(client.get(url)) == {world.sites["A1"].query.pk, answered.pk}


def test_the_inbox_filters_and_sorts(client, world):
    today = timezone.now().date()
    late = add_query(world, "A2", severity=Query.Severity.CRITICAL, due_date=today - datetime.timedelta(days=3))
    soon = add_query(world, "A1", severity=Query.Severity.MAJOR, due_date=today + datetime.timedelta(days=3))
    url = reverse("study-queries", args=[world.studies["A"].pk])
    client.force_login(world.users[Role.DATA_MANAGER])
    assert listed(client.get(url, {"severity": "critical"})) == {late.pk}
    assert listed(client.get(url, {"overdue": "1"})) == {late.pk}
    assert listed(client.get(url, {"site": world.sites["A2"].site.number})) == {late.pk, world.sites["A2"].query.pk}
    assert listed(client.get(url, {"q": "SUBJ-A1"})) == {soon.pk, world.sites["A1"].query.pk}
    by_due = client.get(url, {"sort": "-due"})
    assert [q.pk for q in by_due.context["page"].object_list][:2] == [soon.pk, late.pk]  # no due date last
    assert b'aria-sort="descending"' in by_due.content


def test_a_site_user_cannot_open_or_answer_another_sites_query(client, world):
    client.force_login(world.users[Role.SITE_COORDINATOR])
    for key in ("A2", "B1"):
        query = world.sites[key].query
        assert client.get(reverse("query-detail", args=[query.pk])).status_code == 404
        response = client.post(reverse("query-transition", args=[query.pk, "answer"]), {"text": "Checked."})
        assert response.status_code == 404
        query.refresh_from_db()
        assert query.state == Query.State.OPEN and not query.messages.exists()


def test_the_query_page_shows_the_thread_the_data_point_and_its_history(client, world):
    site_world = world.sites["A1"]
    data_point_update(data_point=site_world.data_point, raw_value="125", actor=world.users[Role.SITE_COORDINATOR],
                      reason="Transcription error corrected against source")
    QueryMessage.objects.create(query=site_world.query, kind=QueryMessage.Kind.QUESTION,
                                author=world.users[Role.DATA_MANAGER], text="First question in the thread.")
    client.force_login(world.users[Role.SITE_COORDINATOR])
    response = client.get(reverse("query-detail", args=[site_world.query.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "First question in the thread." in page and "Transcription error corrected against source" in page
    assert len(response.context["point_history"]) == 2
    assert 'id="form-answer"' in page and 'id="form-close"' not in page  # site staff answer, never close

    client.force_login(world.users[Role.DATA_MANAGER])
    page = client.get(reverse("query-detail", args=[site_world.query.pk])).content.decode()
    assert 'id="form-close"' in page and 'id="form-cancel"' in page and 'id="form-answer"' not in page


def test_the_site_answers_and_the_data_manager_closes_from_the_query_page(client, world):
    query = world.sites["A1"].query
    site_user, dm = world.users[Role.SITE_COORDINATOR], world.users[Role.DATA_MANAGER]
    client.force_login(site_user)
    response = client.post(reverse("query-transition", args=[query.pk, "answer"]),
                           {"text": "Checked against the source document: 120 mmHg is correct."})
    assert response.status_code == 302 and response.url == reverse("query-detail", args=[query.pk])
    query.refresh_from_db()
    assert query.state == Query.State.ANSWERED
    assert query.messages.get(kind=QueryMessage.Kind.ANSWER).author == site_user
    assert query.history.latest().history_user == site_user

    client.force_login(dm)
    response = client.post(reverse("query-transition", args=[query.pk, "close"]),
                           {"reason": "Value confirmed against source", "resolution": "confirmed_correct"})
    assert response.status_code == 302
    query.refresh_from_db()
    assert (query.state, query.resolution) == (Query.State.CLOSED, Query.Resolution.CONFIRMED_CORRECT)
    latest = query.history.latest()
    assert (latest.history_user, latest.history_change_reason) == (dm, "Value confirmed against source")


def test_a_refused_transition_shows_why_and_changes_nothing(client, world):
    query = world.sites["A1"].query
    client.force_login(world.users[Role.DATA_MANAGER])
    response = client.post(reverse("query-transition", args=[query.pk, "close"]), {"reason": "  "})
    assert response.status_code == 400
    assert "Closing a query needs a reason." in response.content.decode()

    client.force_login(world.users[Role.SITE_COORDINATOR])
    response = client.post(reverse("query-transition", args=[query.pk, "close"]), {"reason": "Done"})
    assert response.status_code == 403
    assert client.post(reverse("query-transition", args=[query.pk, "approve"]), {}).status_code == 404
    query.refresh_from_db()
    assert query.state == Query.State.OPEN and query.history.count() == 1


def test_bulk_close_takes_one_reason_for_all_or_changes_nothing(client, world):
    study = world.studies["A"]
    a1, a2 = world.sites["A1"].query, world.sites["A2"].query
    url = reverse("study-query-bulk", args=[study.pk])

    client.force_login(world.users[Role.CRA])  # A2 is not the CRA's site: the batch is refused whole
    response = client.post(url, {"ids": [a1.pk, a2.pk], "action": "close", "reason": "Resolved at visit"})
    assert response.status_code == 302
    assert Query.objects.filter(pk__in=[a1.pk, a2.pk], state=Query.State.OPEN).count() == 2

    client.force_login(world.users[Role.DATA_MANAGER])
    client.post(url, {"ids": [a1.pk, a2.pk], "action": "release", "reason": "x"})  # open queries: refused
    assert Query.objects.filter(pk__in=[a1.pk, a2.pk], state=Query.State.OPEN).count() == 2
    response = client.post(url, {"ids": [a1.pk, a2.pk], "action": "close", "reason": "Resolved at visit",
                                 "querystring": "state=all"}, follow=True)
    assert "Close: done on 2 queries." in response.content.decode()
    assert response.redirect_chain[-1][0] == f"{reverse('study-queries', args=[study.pk])}?state=all"
    for query in (a1, a2):
        query.refresh_from_db()
        latest = query.history.latest()
        assert query.state == Query.State.CLOSED
        assert (latest.history_user, latest.history_change_reason) == (world.users[Role.DATA_MANAGER],
                                                                       "Resolved at visit")


def test_site_staff_get_no_bulk_actions(client, world):
    client.force_login(world.users[Role.SITE_COORDINATOR])
    response = client.get(reverse("study-queries", args=[world.studies["A"].pk]))
    assert response.context["bulk_actions"] == {} and b'id="bulk-form"' in response.content
    assert b'name="ids"' not in response.content


def test_a_cra_raises_a_query_on_a_data_point_of_their_site(client, world):
    study, site_world = world.studies["A"], world.sites["A1"]
    cra = world.users[Role.CRA]
    client.force_login(cra)
    url = reverse("study-query-raise", args=[study.pk])
    page = client.get(url, {"data_point": site_world.data_point.pk})
    assert page.status_code == 200 and [s.pk for s in page.context["subjects"]] == [site_world.subject.pk]
    response = client.post(url, {"subject": site_world.subject.pk, "data_point": site_world.data_point.pk,
                                 "text": neutral_text(site_world.data_point), "recipient": "site",
                                 "category": "range", "severity": "major"})
    assert response.status_code == 302
    query = Query.objects.exclude(pk__in=[s.query.pk for s in world.sites.values()]).get()
    assert response.url == reverse("query-detail", args=[query.pk])
    assert (query.state, query.created_by, query.data_point, query.origin) == (
        Query.State.OPEN, cra, site_world.data_point, Query.Origin.MANUAL)
    assert query.history.latest().history_user == cra

    # Another site's subject cannot be chosen; site staff do not raise queries
    other = client.post(url, {"subject": world.sites["A2"].subject.pk, "text": "x", "recipient": "site",
                              "category": "other", "severity": "minor"})
    assert other.status_code == 200 and other.context["subject"] is None
    client.force_login(world.users[Role.DATA_MANAGER])
    assert {s.pk for s in client.get(url).context["subjects"]} == {world.sites["A1"].subject.pk,
                                                                   world.sites["A2"].subject.pk}
    client.force_login(world.users[Role.SITE_COORDINATOR])
    assert client.get(url).status_code == 404


def test_the_metrics_page_shows_the_metrics_of_the_users_scope(client, world):
    url = reverse("study-query-metrics", args=[world.studies["A"].pk])
    client.force_login(world.users[Role.DATA_MANAGER])
    response = client.get(url, {"as_of": "2025-01-31"})
    assert response.status_code == 200 and response.context["metrics"]["total"] == 2
    page = response.content.decode()
    assert 'id="metrics-data"' in page and "vendor/chartjs/chart.umd.min.js" in page and 'id="chart-aging"' in page
    assert "cdn" not in page.lower()
    client.force_login(world.users[Role.SITE_COORDINATOR])
    assert client.get(url).context["metrics"]["total"] == 1
    client.force_login(world.users[Role.SITE_COORDINATOR])
    assert client.get(reverse("study-query-metrics", args=[world.studies["B"].pk])).status_code == 404


def test_a_leading_query_text_is_refused_with_the_reasons_and_nothing_is_raised(client, world):
    study, site_world = world.studies["A"], world.sites["A1"]
    client.force_login(world.users[Role.CRA])
    before = Query.objects.count()
    response = client.post(reverse("study-query-raise", args=[study.pk]), {
        "subject": site_world.subject.pk, "data_point": site_world.data_point.pk, "recipient": "site",
        "text": "Please change the value to 110.", "category": "range", "severity": "major"})
    assert response.status_code == 400 and Query.objects.count() == before
    first, *details = response.context["form"].errors["text"]
    assert first == "The query text does not pass the compliance check."
    assert any("suggests a value" in detail for detail in details)
    assert "Please change the value to 110." in response.content.decode()  # the text is kept to be reworded


def test_a_leading_requery_is_refused_on_the_query_page(client, world):
    query = add_query(world, "A1", state=Query.State.ANSWERED)
    client.force_login(world.users[Role.DATA_MANAGER])
    response = client.post(reverse("query-transition", args=[query.pk, "requery"]),
                           {"text": "Should this be 110?"})
    assert response.status_code == 400
    assert any("suggests a value" in reason for reason in response.context["refused"]["requery"])
    query.refresh_from_db()
    assert query.state == Query.State.ANSWERED and not query.messages.exists()
