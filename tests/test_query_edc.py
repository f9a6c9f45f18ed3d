"""Queries and the vendor EDC (queries.edc), through the EDC sync the schedule runs, against the
local fake vendor servers (tests/fakes): released queries are raised once per connection, a push
lost on the way is retried without a duplicate, states pulled back are applied once with the EDC's
system account and a reason, and a vendor without queries is left alone."""

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone

from queries.edc import queries_edc_sync
from queries.models import Query, QueryEdcLink, QueryMessage
from studies.audit import set_audit
from studies.edc.base import EdcTransientError
from studies.edc.services import edc_service_actor, edc_sync
from studies.models import DataPoint, EdcConnection
from tests.factories import StudyFactory, UserFactory
from tests.fakes import respond, serve
from tests.fakes.rave import FakeRave
from tests.fakes.redcap import FakeRedcap
from tests.fakes.veeva import FakeVault

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-Pa55word-never-logged"
TOKEN = "0123456789ABCDEF0123456789ABCDEF"


@dataclass
class Flaky:
    """A fake EDC in front of which the network fails once: the next POST to a path ending in
    `fail_path` answers 503, before the EDC saw it, or (`after`) once the EDC has done it."""

    app: object
    fail_path: str = ""
    after: bool = False
    posts: list[str] = field(default_factory=list)

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            self.posts.append(environ["PATH_INFO"])
            if self.fail_path and environ["PATH_INFO"].endswith(self.fail_path):
                self.fail_path = ""
                if self.after:
                    self.app(environ, lambda *args: None)
                return respond(start_response, "503 Service Unavailable", "busy", "text/plain")
        return self.app(environ, start_response)


@dataclass
class Edc:
    fake: object
    network: Flaky
    connection: EdcConnection


@pytest.fixture
def credentials(settings):
    settings.EDC_SECRETS = {"TRIALOPS_EDC_TEST_USERNAME": "svc.trialops", "TRIALOPS_EDC_TEST_PASSWORD": PASSWORD,
                            "TRIALOPS_EDC_TEST_TOKEN": TOKEN}


def synced(fake, vendor, *, base="", remote_study=""):
    """Serve `fake`, connect a study to it and pull its data once (the data points queries are on)."""
    network = Flaky(fake)
    with serve(network) as url:
        connection = EdcConnection.objects.create(study=StudyFactory(), vendor=vendor, base_url=url + base,
                                                  remote_study=remote_study, credentials_env="TRIALOPS_EDC_TEST")
        edc_sync(connection=connection)
        yield Edc(fake, network, connection)


@pytest.fixture
def vault(credentials):
    yield from synced(FakeVault(username="svc.trialops", password=PASSWORD), EdcConnection.Vendor.VEEVA,
                      remote_study="ACME-101")


@pytest.fixture
def rave(credentials):
    yield from synced(FakeRave(username="svc.trialops", password=PASSWORD), EdcConnection.Vendor.RAVE,
                      remote_study="Mediflex(Prod)")


@pytest.fixture
def redcap(credentials):
    yield from synced(FakeRedcap(token=TOKEN), EdcConnection.Vendor.REDCAP, base="/api/")


def raised(edc: Edc, subject_id: str, *, released: bool = True, **fields) -> Query:
    """Test setup: a query on the subject's first data point, stored without the lifecycle."""
    point = DataPoint.objects.filter(study=edc.connection.study, subject__subject_id=subject_id).first()
    query = Query(study=point.study, site=point.subject.site, subject=point.subject, data_point=point,
                  state=Query.State.OPEN if released else Query.State.CANDIDATE,
                  released_at=timezone.now() if released else None,
                  text=f"{point.item.label} is {point.raw_value}. Please verify it against the source document.",
                  **fields)
    set_audit(query, actor=UserFactory(), reason="test setup")
    query.save()
    return query


def test_released_queries_are_raised_in_vault_once(vault):
    query = raised(vault, "SCR-0001")
    raised(vault, "SCR-0002", released=False)  # a candidate: the site has not seen it
    raised(vault, "SCR-0002", origin=Query.Origin.IMPORTED, external_id="Q-77")  # came from an EDC
    edc_sync(connection=vault.connection)
    link = QueryEdcLink.objects.get()
    assert (link.query, link.status, link.remote_id, link.state_pushed, link.attempts) == (
        query, QueryEdcLink.Status.PUSHED, "Q-1", Query.State.OPEN, 1)
    assert [(q["subject"], q["item_name"], q["message"]) for q in vault.fake.queries] == [
        ("SCR-0001", "hr", query.text)]

    edc_sync(connection=vault.connection)
    assert len(vault.fake.queries) == 1
    assert vault.network.posts.count("/api/v24.1/app/cdm/queries") == 1
    assert QueryEdcLink.objects.count() == 1


def test_a_push_lost_before_vault_got_it_is_pushed_on_the_next_sync(vault):
    query = raised(vault, "SCR-0001")
    vault.network.fail_path = "/queries"
    with pytest.raises(EdcTransientError):
        edc_sync(connection=vault.connection)
    link = QueryEdcLink.objects.get()
    assert (link.status, link.remote_id, link.lease_until) == (QueryEdcLink.Status.PENDING, "", None)
    assert "HTTP 503" in link.last_error and vault.fake.queries == []

    edc_sync(connection=vault.connection)
    link.refresh_from_db()
    assert (link.query, link.status, link.remote_id, link.attempts, link.last_error) == (
        query, QueryEdcLink.Status.PUSHED, "Q-1", 2, "")
    assert len(vault.fake.queries) == 1


def test_a_push_lost_after_vault_raised_it_is_found_not_raised_twice(vault):
    lost = raised(vault, "SCR-0002")
    query = raised(vault, "SCR-0001")
    vault.network.fail_path, vault.network.after = "/queries", True
    with pytest.raises(EdcTransientError):  # the first push answers 503 although Vault raised it
        edc_sync(connection=vault.connection)
    assert QueryEdcLink.objects.get().status == QueryEdcLink.Status.PENDING  # the sync stopped there
    assert len(vault.fake.queries) == 1

    edc_sync(connection=vault.connection)
    assert len(vault.fake.queries) == 2
    assert {(link.query_id, link.remote_id, link.status, link.attempts) for link in QueryEdcLink.objects.all()} == {
        (lost.pk, "Q-1", QueryEdcLink.Status.PUSHED, 2), (query.pk, "Q-2", QueryEdcLink.Status.PUSHED, 1)}


def test_a_query_claimed_by_a_sync_still_running_is_left_to_it(vault):
    query = raised(vault, "SCR-0001")
    QueryEdcLink.objects.create(query=query, connection=vault.connection, attempts=1,
                                lease_until=timezone.now() + timedelta(minutes=5))
    edc_sync(connection=vault.connection)
    assert vault.fake.queries == []
    assert QueryEdcLink.objects.get().status == QueryEdcLink.Status.PENDING


def history(query: Query) -> list[tuple]:
    return [(h.state, h.history_user.username, h.history_change_reason)
            for h in query.history.order_by("history_date", "history_id")]


def test_an_answer_and_a_close_in_vault_are_applied_once_by_the_system_account(vault):
    query = raised(vault, "SCR-0001")
    edc_sync(connection=vault.connection)
    vault.fake.queries[0].update(status="answered", response="Verified against the source: 72 is correct.")
    edc_sync(connection=vault.connection)
    edc_sync(connection=vault.connection)  # the same state pulled again changes nothing
    query.refresh_from_db()
    assert query.state == Query.State.ANSWERED and query.answered_at is not None
    answer = query.messages.get(kind=QueryMessage.Kind.ANSWER)
    assert (answer.text, answer.author) == ("Verified against the source: 72 is correct.", edc_service_actor())

    vault.fake.queries[0]["status"] = "closed"
    edc_sync(connection=vault.connection)
    edc_sync(connection=vault.connection)
    query.refresh_from_db()
    assert (query.state, query.resolution) == (Query.State.CLOSED, Query.Resolution.OTHER)
    assert history(query)[1:] == [
        (Query.State.ANSWERED, "system.edc", "Answered in the EDC (Veeva Vault CDMS)"),
        (Query.State.CLOSED, "system.edc", "Closed in the EDC (Veeva Vault CDMS)")]
    assert list(query.messages.values_list("kind", flat=True)) == [QueryMessage.Kind.ANSWER, QueryMessage.Kind.CLOSE]
    assert QueryEdcLink.objects.get().state_pulled == "closed"


def test_a_query_reopened_in_vault_is_requeried(vault):
    query = raised(vault, "SCR-0001")
    edc_sync(connection=vault.connection)
    vault.fake.queries[0].update(status="answered", response="Checked.")
    edc_sync(connection=vault.connection)
    vault.fake.queries[0]["status"] = "open"
    edc_sync(connection=vault.connection)
    query.refresh_from_db()
    assert (query.state, query.escalation) == (Query.State.OPEN, Query.Escalation.SITE)
    assert history(query)[-1] == (Query.State.OPEN, "system.edc", "Re-opened in the EDC (Veeva Vault CDMS)")
    assert query.messages.filter(kind=QueryMessage.Kind.REQUERY).count() == 1


def test_an_answer_given_here_is_not_undone_by_the_state_vault_still_reports(vault):
    query = raised(vault, "SCR-0001")
    edc_sync(connection=vault.connection)  # Vault reports it open from now on: we do not push answers
    query.refresh_from_db()
    query.state = Query.State.ANSWERED
    set_audit(query, actor=UserFactory(), reason="Answered by the site")
    query.save()
    rows = query.history.count()
    edc_sync(connection=vault.connection)
    query.refresh_from_db()
    assert query.state == Query.State.ANSWERED and query.history.count() == rows


def test_rave_gets_each_released_query_once_under_our_id(rave):
    query = raised(rave, "101-001")
    edc_sync(connection=rave.connection)
    edc_sync(connection=rave.connection)
    posted = [body for body in rave.fake.posted if b"mdsol:Query" in body]
    assert len(posted) == 1 and f'QueryRepeatKey="TQ-{query.pk}"'.encode() in posted[0]
    link = QueryEdcLink.objects.get()
    assert (link.status, link.remote_id) == (QueryEdcLink.Status.PUSHED, f"TQ-{query.pk}")


def test_redcap_has_no_query_api_so_its_sync_leaves_queries_alone(redcap):
    query = raised(redcap, "1")
    edc_sync(connection=redcap.connection)
    assert queries_edc_sync(connection=redcap.connection, actor=edc_service_actor()) == {
        "supported": False, "pushed": 0, "applied": 0}
    assert not QueryEdcLink.objects.exists()
    assert {call["content"] for call in redcap.fake.calls} == {"metadata", "record"}
    query.refresh_from_db()
    assert query.state == Query.State.OPEN
