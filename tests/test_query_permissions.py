"""Every role x every transition of a query (queries.lifecycle's matrix): allowed or refused
with 403, and a refusal changes nothing. The query is at site A1, which every role of study A
reaches (the CRA through their grant, site staff as their own site), and in the state the
transition starts from; then the same for A2, outside the CRA's and the site staff's scope."""

import pytest

from agents.identity import agent_user
from queries.lifecycle import (
    TransitionRefused,
    query_answer,
    query_cancel,
    query_close,
    query_create,
    query_discard,
    query_edit,
    query_reassign,
    query_release,
    query_requery,
    query_transition_allowed,
)
from queries.models import Query
from studies.audit import set_audit
from studies.models import Role
from tests.scoping import EXPECTED_SITES, build_world

pytestmark = pytest.mark.django_db
R = Role
def text_for(point) -> str:
    """A compliant question about `point` (it names the item, as the compliance check requires)."""
    return (f"{point.item.label} ({point.item.oid}) at Visit 1: the recorded value is 120 mmHg. "
            "Please verify it against the source document.")

# transition -> (the state it starts from, the state it ends in, the roles allowed, how to do it)
MATRIX = {
    "release": ("candidate", "open", {R.DATA_MANAGER},
                lambda q, u: query_release(query=q, actor=u, reason="Reviewed")),
    "edit": ("candidate", "candidate", {R.DATA_MANAGER},
             lambda q, u: query_edit(query=q, actor=u, text=q.text + " Thank you.", reason="Wording")),
    "discard": ("candidate", "cancelled", {R.DATA_MANAGER},
                lambda q, u: query_discard(query=q, actor=u, reason="False positive")),
    "answer": ("open", "answered", {R.SITE_COORDINATOR, R.INVESTIGATOR},
               lambda q, u: query_answer(query=q, actor=u, text="Checked against source: correct.")),
    "requery": ("answered", "open", {R.DATA_MANAGER, R.CRA},
                lambda q, u: query_requery(query=q, actor=u,
                                           text=f"The answer does not explain it. {text_for(q.data_point)}")),
    "close": ("answered", "closed", {R.DATA_MANAGER, R.CRA},
              lambda q, u: query_close(query=q, actor=u, reason="Answer accepted")),
    "cancel": ("open", "cancelled", {R.DATA_MANAGER},  # a CRA only their own queries: see below
               lambda q, u: query_cancel(query=q, actor=u, reason="Raised in error")),
    "reassign": ("open", "open", {R.DATA_MANAGER, R.CRA},
                 lambda q, u: query_reassign(query=q, actor=u, recipient=Query.Recipient.CRA, reason="To the CRA")),
}


@pytest.fixture
def world():
    return build_world()


def prepared(world, key: str, state: str) -> Query:
    query = world.sites[key].query
    query.state, query.text = state, text_for(world.sites[key].data_point)
    set_audit(query, actor=query.created_by, reason="test setup")
    query.save()
    return query


def snapshot(query: Query) -> tuple:
    query = Query.objects.get(pk=query.pk)
    return (query.state, query.text, query.recipient, query.resolution, query.history.count(),
            query.messages.count())


def assert_refused(query, user, do) -> None:
    before = snapshot(query)
    with pytest.raises(TransitionRefused) as refused:
        do(query, user)
    assert refused.value.status == 403, refused.value.reason
    assert snapshot(query) == before


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("transition", list(MATRIX))
def test_each_role_may_do_exactly_its_transitions(world, role, transition):
    start, end, allowed, do = MATRIX[transition]
    user = world.users[role]
    query = prepared(world, "A1", start)
    history = query.history.count()

    assert query_transition_allowed(user=user, query=query, transition=transition) == (role in allowed)
    if role not in allowed:
        assert_refused(query, user, do)
        return
    do(query, user)
    query.refresh_from_db()
    assert query.state == end
    assert query.history.count() == history + 1
    assert query.history.order_by("-history_date", "-history_id").first().history_user == user


@pytest.mark.parametrize("role", [r for r in Role if EXPECTED_SITES[r] == {"A1"}])
@pytest.mark.parametrize("transition", list(MATRIX))
def test_site_scoped_roles_may_do_nothing_at_another_site(world, role, transition):
    start, _, _, do = MATRIX[transition]
    query = prepared(world, "A2", start)
    assert not query_transition_allowed(user=world.users[role], query=query, transition=transition)
    assert_refused(query, world.users[role], do)


@pytest.mark.parametrize("transition", list(MATRIX))
def test_nobody_in_study_a_may_touch_study_b(world, transition):
    start, _, _, do = MATRIX[transition]
    query = prepared(world, "B1", start)
    for user in world.users.values():
        assert_refused(query, user, do)


@pytest.mark.parametrize("transition", list(MATRIX))
def test_an_agent_takes_no_part_in_the_matrix(world, transition):
    start, _, _, do = MATRIX[transition]
    assert_refused(prepared(world, "A1", start), agent_user("QueryGenerator"), do)


def test_a_cra_cancels_a_query_they_raised_but_not_another(world):
    cra = world.users[R.CRA]
    a1 = world.sites["A1"]
    own = query_create(actor=cra, study=a1.site.study, subject=a1.subject, data_point=a1.data_point,
                       text=text_for(a1.data_point))
    other = prepared(world, "A1", "open")

    assert query_transition_allowed(user=cra, query=own, transition="cancel")
    query_cancel(query=own, actor=cra, reason="Raised on the wrong visit")
    assert Query.objects.get(pk=own.pk).state == "cancelled"
    assert_refused(other, cra, MATRIX["cancel"][3])


@pytest.mark.parametrize("role", list(Role))
def test_only_data_managers_and_cras_raise_queries(world, role):
    a1 = world.sites["A1"]
    user = world.users[role]
    count = Query.objects.count()
    if role in (R.DATA_MANAGER, R.CRA):
        query = query_create(actor=user, study=a1.site.study, subject=a1.subject, data_point=a1.data_point,
                             text=text_for(a1.data_point))
        assert (query.state, query.created_by, query.history.get().history_user) == ("open", user, user)
        return
    with pytest.raises(TransitionRefused) as refused:
        query_create(actor=user, study=a1.site.study, subject=a1.subject, data_point=a1.data_point,
                     text=text_for(a1.data_point))
    assert refused.value.status == 403 and Query.objects.count() == count


def test_a_cra_may_not_raise_a_query_at_a_site_they_do_not_monitor(world):
    a2 = world.sites["A2"]
    with pytest.raises(TransitionRefused) as refused:
        query_create(actor=world.users[R.CRA], study=a2.site.study, subject=a2.subject, data_point=a2.data_point,
                     text=text_for(a2.data_point))
    assert refused.value.status == 403 and not Query.objects.filter(created_by=world.users[R.CRA]).exists()
