"""The queries API contract (issue 6): create, the transitions, the detail with its thread and
history, bulk, scoping, filters; errors in the project's shape with the reasons in `extra`, and
a refused request changes nothing."""

import pytest
from rest_framework.test import APIClient

from agents.identity import agent_user
from queries.lifecycle import query_create
from queries.models import Query
from studies.audit import set_audit
from studies.models import Role
from tests.scoping import build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return build_world()


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def text_for(site_world) -> str:
    point = site_world.data_point
    return (f"{point.item.label} ({point.item.oid}) at {point.visit.definition.name}: the recorded value is "
            f"{point.raw_value} {point.item.units}. Please verify it against the source document.")


def stored(query: Query) -> tuple:
    query = Query.objects.get(pk=query.pk)
    return query.state, query.text, query.recipient, query.history.count(), query.messages.count()


def post(user, path: str, data: dict | None = None):
    return client_for(user).post(path, data or {}, format="json")


def test_a_data_manager_raises_a_manual_query_that_starts_open(world):
    dm, a1 = world.users[Role.DATA_MANAGER], world.sites["A1"]

    response = post(dm, "/api/v1/queries/", {"data_point": a1.data_point.pk, "text": text_for(a1),
                                             "recipient_role": "site", "severity": "major"})

    assert response.status_code == 201, response.content
    body = response.json()
    query = Query.objects.get(pk=body["id"])
    assert (query.state, query.origin, query.created_by, query.subject, query.site) == (
        "open", "manual", dm, a1.subject, a1.site)
    assert (body["state"], body["recipient"], body["severity"]) == ("open", "site", "major")
    assert [(m["kind"], m["author"]) for m in body["messages"]] == [("question", "dm_a")]
    assert [(h["history_type"], h["history_user"], h["reason"]) for h in body["history"]] == [
        ("created", "dm_a", "Raised manually")]


def test_an_agents_query_starts_as_a_candidate_hidden_from_the_site_until_released(world):
    a1 = world.sites["A1"]
    query = query_create(actor=agent_user("QueryGenerator"), study=a1.site.study, subject=a1.subject,
                         data_point=a1.data_point, text=text_for(a1), origin=Query.Origin.RULE)
    site_user, dm = world.users[Role.SITE_COORDINATOR], world.users[Role.DATA_MANAGER]
    assert client_for(site_user).get(f"/api/v1/queries/{query.pk}/").status_code == 404
    assert client_for(dm).get(f"/api/v1/queries/{query.pk}/").json()["state"] == "candidate"

    response = post(dm, f"/api/v1/queries/{query.pk}/release/")

    assert response.status_code == 200 and response.json()["state"] == "open"
    assert Query.objects.get(pk=query.pk).released_at is not None
    assert client_for(site_user).get(f"/api/v1/queries/{query.pk}/").json()["state"] == "open"


@pytest.mark.parametrize("role", [Role.SITE_COORDINATOR, Role.MEDICAL_MONITOR, Role.AUDITOR, Role.SPONSOR])
def test_a_role_that_may_not_raise_queries_gets_403_and_nothing_is_created(world, role):
    a1 = world.sites["A1"]
    count = Query.objects.count()
    response = post(world.users[role], "/api/v1/queries/", {"data_point": a1.data_point.pk, "text": text_for(a1)})
    assert response.status_code == 403
    assert response.json() == {"message": "Your role may not raise queries at this site.",
                               "extra": {"reasons": ["Your role may not raise queries at this site."]}}
    assert Query.objects.count() == count


def test_a_data_point_outside_the_scope_answers_like_a_missing_one(world):
    cra, a2 = world.users[Role.CRA], world.sites["A2"]
    foreign = post(cra, "/api/v1/queries/", {"data_point": a2.data_point.pk, "text": text_for(a2)})
    missing = post(cra, "/api/v1/queries/", {"data_point": 987654321, "text": text_for(a2)})
    assert foreign.status_code == missing.status_code == 400
    assert foreign.json() == missing.json()
    assert foreign.json()["extra"]["fields"] == {"data_point": ["No such data point."]}
    assert not Query.objects.filter(created_by=cra).exists()


def test_an_empty_text_is_refused_with_the_reason(world):
    a1 = world.sites["A1"]
    count = Query.objects.count()
    response = post(world.users[Role.DATA_MANAGER], "/api/v1/queries/", {"data_point": a1.data_point.pk, "text": " "})
    assert response.status_code == 400
    assert response.json()["extra"]["reasons"] == ["A query needs a text."]
    assert Query.objects.count() == count


def test_a_leading_text_is_refused_by_the_compliance_check(world):
    a1 = world.sites["A1"]
    count = Query.objects.count()
    response = post(world.users[Role.DATA_MANAGER], "/api/v1/queries/",
                    {"data_point": a1.data_point.pk, "text": "The value should be 130, please change it to 130."})
    assert response.status_code == 400 and response.json()["extra"]["reasons"]
    assert Query.objects.count() == count


def test_answer_requery_answer_close_through_the_api(world):
    query, a1 = world.sites["A1"].query, world.sites["A1"]
    site_user, cra = world.users[Role.SITE_COORDINATOR], world.users[Role.CRA]

    answered = post(site_user, f"/api/v1/queries/{query.pk}/answer/", {"text": "Source says 120."})
    requeried = post(cra, f"/api/v1/queries/{query.pk}/requery/", {"text": f"Not explained. {text_for(a1)}"})
    post(site_user, f"/api/v1/queries/{query.pk}/answer/", {"text": "Confirmed 120 on the ECG printout."})
    closed = post(cra, f"/api/v1/queries/{query.pk}/close/",
                  {"reason": "Source verified", "resolution": "confirmed_correct"})

    assert [r.status_code for r in (answered, requeried, closed)] == [200, 200, 200]
    assert (answered.json()["state"], requeried.json()["state"], closed.json()["state"]) == (
        "answered", "open", "closed")
    query.refresh_from_db()
    assert (query.state, query.resolution) == ("closed", "confirmed_correct")
    assert list(query.messages.values_list("kind", flat=True)) == ["answer", "requery", "answer", "close"]


def test_the_detail_shows_state_thread_and_history_with_who_when_what_and_why(world):
    query, dm = world.sites["A1"].query, world.users[Role.DATA_MANAGER]
    post(dm, f"/api/v1/queries/{query.pk}/cancel/", {"reason": "Raised on the wrong subject"})

    body = client_for(world.users[Role.AUDITOR]).get(f"/api/v1/queries/{query.pk}/").json()

    assert body["state"] == "cancelled"
    assert [(m["kind"], m["author"], m["text"]) for m in body["messages"]] == [
        ("note", "dm_a", "Cancelled: Raised on the wrong subject")]
    created, cancelled = body["history"]
    assert (created["history_type"], created["history_user"], created["reason"]) == ("created", "seed", "test setup")
    assert (cancelled["history_type"], cancelled["history_user"], cancelled["reason"]) == (
        "changed", "dm_a", "Raised on the wrong subject")
    assert cancelled["history_date"]
    changes = {c["field"]: (c["old"], c["new"]) for c in cancelled["changes"]}
    assert changes["state"] == ("open", "cancelled") and "cancelled_at" in changes
    assert body["transitions"] == []  # nothing left to do, and an auditor changes nothing anyway


def test_the_detail_lists_what_the_user_may_do_now(world):
    query = world.sites["A1"].query
    for role, expected in ((Role.SITE_COORDINATOR, ["answer"]), (Role.DATA_MANAGER, ["close", "cancel", "reassign"]),
                           (Role.CRA, ["close", "reassign"]), (Role.AUDITOR, [])):
        assert client_for(world.users[role]).get(f"/api/v1/queries/{query.pk}/").json()["transitions"] == expected


@pytest.mark.parametrize(("path", "data"), [("close", {}), ("close", {"reason": "  "}), ("cancel", {})])
def test_closing_or_cancelling_without_a_reason_answers_400_and_changes_nothing(world, path, data):
    query = world.sites["A1"].query
    before = stored(query)
    response = post(world.users[Role.DATA_MANAGER], f"/api/v1/queries/{query.pk}/{path}/", data)
    assert response.status_code == 400
    assert response.json()["extra"]["reasons"][0].endswith("needs a reason.")
    assert stored(query) == before


def test_a_wrong_role_answers_403_in_the_error_shape_and_changes_nothing(world):
    query = world.sites["A1"].query
    before = stored(query)
    response = post(world.users[Role.SITE_COORDINATOR], f"/api/v1/queries/{query.pk}/close/", {"reason": "done"})
    assert response.status_code == 403
    assert response.json() == {"message": "Your role may not close this query.",
                               "extra": {"reasons": ["Your role may not close this query."], "query": query.pk}}
    assert stored(query) == before


def test_a_transition_from_the_wrong_state_answers_400(world):
    query = world.sites["A1"].query
    before = stored(query)
    response = post(world.users[Role.CRA], f"/api/v1/queries/{query.pk}/requery/", {"text": "Please verify."})
    assert response.status_code == 400
    assert response.json()["message"] == "A query in state Open cannot be re-queried."
    assert stored(query) == before


@pytest.mark.parametrize("path", ["release", "answer", "close", "requery", "cancel"])
def test_another_sites_query_answers_404(world, path):
    query = world.sites["A2"].query
    before = stored(query)
    response = post(world.users[Role.SITE_COORDINATOR], f"/api/v1/queries/{query.pk}/{path}/",
                    {"text": "x", "reason": "x"})
    assert response.status_code == 404 and response.json() == {"message": "Not found.", "extra": {}}
    assert stored(query) == before


def test_bulk_closes_every_query_with_one_reason(world):
    queries = [world.sites[key].query for key in ("A1", "A2")]
    response = post(world.users[Role.DATA_MANAGER], "/api/v1/queries/bulk/",
                    {"action": "close", "ids": [q.pk for q in queries], "reason": "Resolved at the data review",
                     "resolution": "corrected"})
    assert response.status_code == 200, response.content
    assert sorted(row["id"] for row in response.json()) == sorted(q.pk for q in queries)
    for query in queries:
        query.refresh_from_db()
        assert (query.state, query.resolution) == ("closed", "corrected")
        assert query.history.order_by("-history_id").first().history_change_reason == "Resolved at the data review"


def test_bulk_reassign(world):
    query = world.sites["A1"].query
    response = post(world.users[Role.CRA], "/api/v1/queries/bulk/",
                    {"action": "reassign", "ids": [query.pk], "reason": "For data management",
                     "recipient_role": "data_management"})
    assert response.status_code == 200 and Query.objects.get(pk=query.pk).recipient == "data_management"


def test_bulk_with_one_refused_row_changes_nothing_and_names_it(world):
    first, second = world.sites["A1"].query, world.sites["A2"].query
    second.state = Query.State.CLOSED
    set_audit(second, actor=second.created_by, reason="test setup")
    second.save()
    before = [stored(first), stored(second)]

    response = post(world.users[Role.DATA_MANAGER], "/api/v1/queries/bulk/",
                    {"action": "cancel", "ids": [first.pk, second.pk], "reason": "Raised in error"})

    assert response.status_code == 400
    assert response.json()["extra"]["query"] == second.pk
    assert response.json()["message"] == f"Query {second.pk}: A query in state Closed cannot be cancelled."
    assert [stored(first), stored(second)] == before


def test_bulk_with_a_query_outside_the_scope_changes_nothing(world):
    own, foreign = world.sites["A1"].query, world.sites["A2"].query  # the CRA monitors A1 only
    before = [stored(own), stored(foreign)]
    response = post(world.users[Role.CRA], "/api/v1/queries/bulk/",
                    {"action": "close", "ids": [own.pk, foreign.pk], "reason": "Checked"})
    assert response.status_code == 400
    assert response.json()["extra"] == {"query": foreign.pk, "reasons": ["No such query."]}
    assert [stored(own), stored(foreign)] == before


def test_the_list_is_scoped_paginated_and_filtered(world):
    dm = world.users[Role.DATA_MANAGER]
    post(dm, f"/api/v1/queries/{world.sites['A2'].query.pk}/cancel/", {"reason": "Raised in error"})
    client = client_for(dm)

    page = client.get("/api/v1/queries/", {"page_size": 1}).json()
    assert page["count"] == 2 and len(page["results"]) == 1 and page["next"]
    open_ = client.get("/api/v1/queries/", {"state": "open"}).json()["results"]
    assert [row["id"] for row in open_] == [world.sites["A1"].query.pk]
    by_site = client.get("/api/v1/queries/", {"site": world.sites["A2"].site.pk, "origin": "manual",
                                              "severity": "minor", "category": "other", "recipient": "site",
                                              "study": world.studies["A"].pk}).json()["results"]
    assert [row["id"] for row in by_site] == [world.sites["A2"].query.pk]
    assert client_for(world.users[Role.SITE_COORDINATOR]).get("/api/v1/queries/").json()["count"] == 1


def test_the_schema_documents_the_transitions(db, client):
    from tests.factories import UserFactory

    UserFactory(username="reader")
    client.login(username="reader", password="pw-for-tests")
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]
    for transition in ("release", "answer", "close", "requery", "cancel", "edit", "discard", "reassign"):
        assert f"/api/v1/queries/{{id}}/{transition}/" in paths
    assert "/api/v1/queries/bulk/" in paths and "post" in paths["/api/v1/queries/"]


def test_the_query_metrics_are_served_in_the_api(world):
    response = client_for(world.users[Role.DATA_MANAGER]).get("/api/v1/query-metrics/",
                                                               {"study": world.studies["A"].pk})
    assert response.status_code == 200 and response.json()["study"] == world.studies["A"].pk
    foreign = client_for(world.users[Role.DATA_MANAGER]).get("/api/v1/query-metrics/",
                                                              {"study": world.studies["B"].pk})
    assert foreign.status_code == 404
