"""The QueryTracker lifecycle, service by service: stored state, thread messages and audit rows
(who and why) after each transition; refusals change nothing; bulk is all or nothing; system
queries close themselves when the data is corrected and the rule passes."""

import datetime

import pytest
from django.utils import timezone

from agents.identity import agent_user
from queries.lifecycle import (
    TransitionRefused,
    queries_auto_close,
    queries_bulk,
    query_answer,
    query_cancel,
    query_close,
    query_create,
    query_discard,
    query_edit,
    query_reassign,
    query_release,
    query_requery,
)
from queries.models import Discrepancy, EditCheck, Query
from queries.selectors import query_list
from studies.audit import set_audit
from studies.models import Role
from studies.services import data_point_update
from tests.scoping import build_world

pytestmark = pytest.mark.django_db


def neutral_text(site_world) -> str:
    """A compliant query text: specific (item, visit, value), neutral, asks to verify against source."""
    point = site_world.data_point
    return (f"{point.item.label} ({point.item.oid}) at {point.visit.definition.name}: the recorded value is "
            f"{point.raw_value} {point.item.units}. Please verify it against the source document.")


@pytest.fixture
def world():
    return build_world()


@pytest.fixture
def dm(world):
    return world.users[Role.DATA_MANAGER]


@pytest.fixture
def site_user(world):
    return world.users[Role.SITE_COORDINATOR]


@pytest.fixture
def cra(world):
    return world.users[Role.CRA]


@pytest.fixture
def agent(db):
    return agent_user("QueryGenerator")


def candidate(world, agent, key="A1", **kwargs) -> Query:
    site = world.sites[key]
    return query_create(actor=agent, study=site.site.study, subject=site.subject, data_point=site.data_point,
                        text=neutral_text(site), origin=Query.Origin.RULE, rule_code="RNG-SYSBP", **kwargs)


def in_state(query: Query, state: str) -> Query:
    """Test setup: put a query in a state without going through the lifecycle."""
    query.state = state
    set_audit(query, actor=query.created_by, reason="test setup")
    query.save()
    return query


def snapshot(query: Query) -> tuple:
    query = Query.objects.get(pk=query.pk)
    return (query.state, query.text, query.recipient, query.resolution, query.due_date, query.history.count(),
            query.messages.count())


def latest(query: Query):
    return Query.objects.get(pk=query.pk).history.order_by("-history_date", "-history_id").first()


def kinds(query: Query) -> list[str]:
    return list(query.messages.values_list("kind", flat=True))


def test_a_persons_query_starts_open_with_its_question_a_due_date_and_an_audit_row(world, dm):
    from queries.sla import query_due_date

    a1 = world.sites["A1"]
    query = query_create(actor=dm, study=a1.site.study, subject=a1.subject, data_point=a1.data_point,
                         text=neutral_text(a1), recipient=Query.Recipient.SITE, severity=Query.Severity.MAJOR)

    query.refresh_from_db()
    assert (query.state, query.origin, query.text_origin, query.created_by) == ("open", "manual", "person", dm)
    assert query.released_at is not None and query.language == a1.site.language
    assert query.due_date == query_due_date(query=query, start=query.released_at)
    assert [(m.kind, m.author, m.text) for m in query.messages.all()] == [("question", dm, neutral_text(a1))]
    (row,) = query.history.all()
    assert (row.history_type, row.history_user, row.history_change_reason) == ("+", dm, "Raised manually")


def test_an_agents_query_starts_as_a_candidate_that_only_data_managers_see(world, agent, dm, cra, site_user):
    query = candidate(world, agent)

    assert (query.state, query.released_at, query.due_date, query.text_origin) == ("candidate", None, None,
                                                                                   "template")
    assert kinds(query) == []  # nothing in the thread until the site may see it
    assert query.history.get().history_user == agent
    assert query_list(user=dm).filter(pk=query.pk).exists()
    assert not query_list(user=cra).filter(pk=query.pk).exists()
    assert not query_list(user=site_user).filter(pk=query.pk).exists()


def test_releasing_a_candidate_opens_it_for_the_site_with_its_question_and_due_date(world, agent, dm, site_user):
    query = candidate(world, agent)

    query_release(query=query, actor=dm, reason="Reviewed")

    query.refresh_from_db()
    assert query.state == "open" and query.released_at is not None and query.due_date is not None
    assert [(m.kind, m.author) for m in query.messages.all()] == [("question", dm)]
    assert (latest(query).history_user, latest(query).history_change_reason) == (dm, "Reviewed")
    assert query_list(user=site_user).filter(pk=query.pk).exists()


def test_editing_a_candidate_keeps_the_draft_in_the_history(world, agent, dm):
    query = candidate(world, agent)
    draft = query.text

    query_edit(query=query, actor=dm, text=draft + " Thank you.", reason="Clearer wording")

    query.refresh_from_db()
    assert query.text.endswith("Thank you.") and query.text_origin == "person"
    row = latest(query)
    assert (row.history_user, row.history_change_reason, row.prev_record.text) == (dm, "Clearer wording", draft)


def test_a_released_query_can_no_longer_be_edited_or_discarded(world, agent, dm):
    query = query_release(query=candidate(world, agent), actor=dm)
    before = snapshot(query)

    with pytest.raises(TransitionRefused) as edit:
        query_edit(query=query, actor=dm, text="Another text", reason="late edit")
    with pytest.raises(TransitionRefused) as discard:
        query_discard(query=query, actor=dm, reason="late")

    assert edit.value.status == discard.value.status == 400
    assert snapshot(query) == before


def test_discarding_a_candidate_cancels_it_with_the_reason(world, agent, dm):
    query = candidate(world, agent)

    query_discard(query=query, actor=dm, reason="False positive: the unit is mmHg")

    query.refresh_from_db()
    assert query.state == "cancelled" and query.cancelled_at is not None and query.released_at is None
    assert latest(query).history_change_reason == "False positive: the unit is mmHg"


def test_the_whole_lifecycle_answer_requery_answer_close(world, dm, cra, site_user):
    from queries.sla import query_due_date

    query = in_state(world.sites["A1"].query, Query.State.OPEN)
    query.due_date, query.escalation = datetime.date(2020, 1, 1), Query.Escalation.INVESTIGATOR
    set_audit(query, actor=dm, reason="test setup")
    query.save()

    query_answer(query=query, actor=site_user, text="Source says 120.")
    assert Query.objects.get(pk=query.pk).state == "answered"
    query_requery(query=query, actor=cra, text=f"The answer does not explain it. {neutral_text(world.sites['A1'])}")
    query.refresh_from_db()
    assert query.state == "open" and query.escalation == Query.Escalation.SITE
    assert query.due_date == query_due_date(query=query, start=latest(query).history_date)
    query_answer(query=query, actor=world.users[Role.INVESTIGATOR], text="Corrected to 210.")
    query_close(query=query, actor=dm, reason="Corrected in the EDC", resolution=Query.Resolution.CORRECTED)

    query.refresh_from_db()
    assert (query.state, query.resolution) == ("closed", "corrected")
    assert query.answered_at is not None and query.closed_at is not None
    assert kinds(query) == ["answer", "requery", "answer", "close"]
    rows = list(query.history.order_by("history_date", "history_id"))[-4:]
    assert [(r.state, r.history_user.username, r.history_change_reason) for r in rows] == [
        ("answered", "sc_a1", "Answered by the site"),
        ("open", "cra_a", "Re-queried: the answer was not accepted"),
        ("answered", "pi_a1", "Answered by the site"),
        ("closed", "dm_a", "Corrected in the EDC"),
    ]


def test_an_open_query_may_be_closed_without_an_answer(world, dm):
    query = world.sites["A1"].query
    query_close(query=query, actor=dm, reason="Value corrected by the site without answering")
    query.refresh_from_db()
    assert (query.state, query.resolution) == ("closed", "other")


@pytest.mark.parametrize("state", ["candidate", "open", "answered"])
def test_cancel_works_from_any_state_but_closed(world, dm, state):
    query = in_state(world.sites["A1"].query, state)

    query_cancel(query=query, actor=dm, reason="Raised in error")

    query.refresh_from_db()
    assert query.state == "cancelled" and query.cancelled_at is not None
    assert latest(query).history_change_reason == "Raised in error" and kinds(query) == ["note"]


@pytest.mark.parametrize("state", ["closed", "cancelled"])
def test_a_closed_or_cancelled_query_cannot_be_cancelled(world, dm, state):
    query = in_state(world.sites["A1"].query, state)
    before = snapshot(query)

    with pytest.raises(TransitionRefused) as refused:
        query_cancel(query=query, actor=dm, reason="Raised in error")

    assert refused.value.status == 400 and snapshot(query) == before


def test_a_requery_needs_an_answered_query(world, dm):
    query = world.sites["A1"].query
    before = snapshot(query)
    with pytest.raises(TransitionRefused, match="cannot be re-queried"):
        query_requery(query=query, actor=dm, text="Please verify.")
    assert snapshot(query) == before


@pytest.mark.parametrize("service", [query_close, query_cancel])
@pytest.mark.parametrize("reason", ["", "   "])
def test_closing_and_cancelling_need_a_reason(world, dm, service, reason):
    query = world.sites["A1"].query
    before = snapshot(query)

    with pytest.raises(TransitionRefused, match="needs a reason") as refused:
        service(query=query, actor=dm, reason=reason)

    assert refused.value.status == 400 and snapshot(query) == before


def test_an_answer_needs_a_text_and_a_close_a_known_resolution(world, dm, site_user):
    query = world.sites["A1"].query
    before = snapshot(query)
    with pytest.raises(TransitionRefused, match="needs a text"):
        query_answer(query=query, actor=site_user, text=" ")
    with pytest.raises(TransitionRefused, match="Unknown resolution"):
        query_close(query=query, actor=dm, reason="done", resolution="made_up")
    assert snapshot(query) == before


def test_reassigning_changes_the_marking_group_with_a_note(world, dm):
    query = world.sites["A1"].query
    query_reassign(query=query, actor=dm, recipient=Query.Recipient.DATA_MANAGEMENT, reason="Coding question")
    query.refresh_from_db()
    assert query.recipient == "data_management"
    assert query.messages.get().text == "Reassigned from Site to Data management: Coding question"
    assert latest(query).history_change_reason == "Coding question"


def test_a_text_refused_by_the_compliance_check_creates_nothing(world, dm):
    a1 = world.sites["A1"]
    count = Query.objects.count()

    with pytest.raises(TransitionRefused) as refused:
        query_create(actor=dm, study=a1.site.study, subject=a1.subject, data_point=a1.data_point,
                     text="The value should be 130, please change it to 130.")

    assert refused.value.status == 400 and refused.value.reasons
    assert Query.objects.count() == count


# Bulk


def test_bulk_release_moves_every_candidate_with_one_reason(world, agent, dm):
    queries = [candidate(world, agent, key) for key in ("A1", "A2")]

    done = queries_bulk(queries=queries, actor=dm, action="release", reason="Reviewed in bulk")

    assert [q.state for q in done] == ["open", "open"]
    for query in queries:
        assert (latest(query).history_user, latest(query).history_change_reason) == (dm, "Reviewed in bulk")
        assert kinds(query) == ["question"]


def test_bulk_reassign_and_close(world, dm):
    queries = [world.sites[key].query for key in ("A1", "A2")]
    queries_bulk(queries=queries, actor=dm, action="reassign", reason="To the CRA", recipient=Query.Recipient.CRA)
    queries_bulk(queries=queries, actor=dm, action="close", reason="Resolved at the visit",
                 resolution=Query.Resolution.CONFIRMED_CORRECT)
    for query in queries:
        query.refresh_from_db()
        assert (query.recipient, query.state, query.resolution) == ("cra", "closed", "confirmed_correct")


def test_one_forbidden_row_refuses_the_whole_batch(world, cra):
    allowed, foreign = world.sites["A1"].query, world.sites["A2"].query  # the CRA monitors A1 only
    before = [snapshot(allowed), snapshot(foreign)]

    with pytest.raises(TransitionRefused) as refused:
        queries_bulk(queries=[allowed, foreign], actor=cra, action="close", reason="Checked at the visit")

    assert (refused.value.status, refused.value.query_id) == (403, foreign.pk)
    assert str(foreign.pk) in refused.value.reason
    assert [snapshot(allowed), snapshot(foreign)] == before  # A1, closed first, was rolled back


def test_one_row_in_the_wrong_state_refuses_the_whole_batch(world, dm):
    first, second = world.sites["A1"].query, in_state(world.sites["A2"].query, Query.State.CLOSED)
    before = [snapshot(first), snapshot(second)]

    with pytest.raises(TransitionRefused) as refused:
        queries_bulk(queries=[first, second], actor=dm, action="cancel", reason="Raised in error")

    assert (refused.value.status, refused.value.query_id) == (400, second.pk)
    assert [snapshot(first), snapshot(second)] == before


@pytest.mark.parametrize(("action", "reason", "kwargs"), [
    ("close", "", {}), ("answer", "x", {}), ("reassign", "x", {}), ("cancel", "x", {"recipient": "cra"})])
def test_a_bulk_request_without_a_reason_or_with_a_wrong_action_is_refused(world, dm, action, reason, kwargs):
    query = world.sites["A1"].query
    before = snapshot(query)
    with pytest.raises(TransitionRefused) as refused:
        queries_bulk(queries=[query], actor=dm, action=action, reason=reason, **kwargs)
    assert refused.value.status == 400 and snapshot(query) == before


# Auto-close


@pytest.fixture
def system_query(world, agent):
    """An open system query on A1's data point, raised for a discrepancy of edit check RNG-SYSBP."""
    a1 = world.sites["A1"]
    check = EditCheck(study=a1.site.study, code="RNG-SYSBP", name="SYSBP within range", rule_type="range",
                      item=a1.data_point.item, params={"low": 60, "high": 100, "kind": "hard"})
    set_audit(check, actor=agent, reason="test setup")
    check.save()
    query = query_release(query=candidate(world, agent), actor=world.users[Role.DATA_MANAGER])
    Discrepancy.objects.create(study=a1.site.study, site=a1.site, subject=a1.subject, data_point=a1.data_point,
                               edit_check=check, check_version=1, key=f"dp:{a1.data_point.pk}", rule_type="range",
                               category="range", severity="major", confidence=0.9, observed="120", query=query)
    return query


def correct(world, value="95"):
    point = world.sites["A1"].data_point
    return data_point_update(data_point=point, actor=world.users[Role.SITE_COORDINATOR], raw_value=value,
                             reason="Transcription error", expected_version=point.version)


def resolve(query):
    for finding in Discrepancy.objects.filter(query=query):
        finding.status, finding.resolved_at = Discrepancy.Status.RESOLVED, timezone.now()
        finding.save()


def test_a_corrected_value_whose_rule_passes_closes_its_system_query(world, agent, system_query):
    correct(world)
    resolve(system_query)

    closed = queries_auto_close(queries=[system_query], actor=agent, reason="QueryAnalyzer pass 7")

    system_query.refresh_from_db()
    assert closed == [system_query]
    assert (system_query.state, system_query.resolution) == ("closed", "corrected")
    expected = "Closed automatically: the value was corrected and edit check RNG-SYSBP passes (QueryAnalyzer pass 7)"
    row = latest(system_query)
    assert (row.history_user, row.history_change_reason) == (agent, expected)
    assert system_query.messages.last().kind == "close" and system_query.messages.last().text == expected


def test_auto_close_leaves_a_query_whose_rule_still_fails(world, agent, system_query):
    correct(world, "150")  # changed, still out of range: the discrepancy stays open
    before = snapshot(system_query)
    assert queries_auto_close(queries=[system_query], actor=agent, reason="") == []
    assert snapshot(system_query) == before


def test_auto_close_leaves_a_query_whose_rule_passes_without_a_correction(world, agent, system_query):
    resolve(system_query)  # e.g. the rule's limits were changed: a person decides
    before = snapshot(system_query)
    assert queries_auto_close(queries=[system_query], actor=agent, reason="") == []
    assert snapshot(system_query) == before


def test_auto_close_leaves_manual_and_closed_queries(world, agent, dm, system_query):
    manual = world.sites["A1"].query  # a person's query on the same data point
    query_close(query=system_query, actor=dm, reason="Closed by hand")
    correct(world)
    resolve(system_query)
    before = [snapshot(manual), snapshot(system_query)]
    assert queries_auto_close(queries=[manual, system_query], actor=agent, reason="") == []
    assert [snapshot(manual), snapshot(system_query)] == before


def test_auto_close_cancels_a_candidate_the_site_never_saw(world, agent, system_query):
    draft = candidate(world, agent)
    Discrepancy.objects.filter(query=system_query).update(query=draft)
    correct(world)
    resolve(draft)

    queries_auto_close(queries=[draft], actor=agent, reason="")

    draft.refresh_from_db()
    assert draft.state == "cancelled" and latest(draft).history_change_reason.startswith(
        "Cancelled automatically before release: the value was corrected")


def test_only_an_agent_closes_queries_automatically(world, dm, system_query):
    correct(world)
    resolve(system_query)
    with pytest.raises(TransitionRefused) as refused:
        queries_auto_close(queries=[system_query], actor=dm, reason="")
    assert refused.value.status == 403 and Query.objects.get(pk=system_query.pk).state == "open"


def test_with_the_query_analyzer_a_corrected_value_closes_its_query(world, dm):
    """The call the analyzer makes once a pass has resolved the findings that are gone."""
    from queries.checks.engine import analyzer_pass

    analyzer = agent_user("QueryAnalyzer")
    a1 = world.sites["A1"]
    check = EditCheck(study=a1.site.study, code="SYSBP-MAX", name="SYSBP at most 100", rule_type="range",
                      item=a1.data_point.item, params={"high": 100, "kind": "hard"})
    set_audit(check, actor=dm, reason="test setup")
    check.save()
    analyzer_pass(study=a1.site.study, actor=analyzer)
    raised = Query.objects.get(rule_code="SYSBP-MAX", subject=a1.subject)
    query_release(query=raised, actor=dm)  # a candidate until a data manager releases it
    correct(world)
    analyzer_pass(study=a1.site.study, actor=analyzer)
    assert Discrepancy.objects.get(query=raised).status == "resolved"

    gone = Discrepancy.objects.filter(study=a1.site.study, status="resolved").values("query_id")
    queries_auto_close(queries=Query.objects.filter(pk__in=gone), actor=analyzer, reason="QueryAnalyzer pass")

    raised.refresh_from_db()
    assert (raised.state, raised.resolution) == ("closed", "corrected")
    assert latest(raised).history_change_reason == ("Closed automatically: the value was corrected and edit check "
                                                    "SYSBP-MAX passes (QueryAnalyzer pass)")
