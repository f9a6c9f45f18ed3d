"""Queries and the vendor EDC (issue 6, item 10): released queries are raised in the study's EDC
and the states the EDC reports are brought back, each at most once. Run by the EDC sync
(studies.edc.services.edc_sync) after the data pull, under that connection's sync lease.

Push, per query and connection (the QueryEdcLink row is the ledger):
  1. claim: insert the link as pending with a lease; the unique (query, connection) row lets only
     one sync have it, also when two race (the loser's insert fails and it moves on);
  2. push the one query; 3. record the EDC's id (pushed).
A failed push keeps the link pending and frees its lease; a sync that died keeps it until the
lease runs out. Either way the next sync first asks the EDC whether it has the query already
(the vendor keeps our id, as Rave's QueryRepeatKey, or a query of the same subject, item and
text no other link holds, for Vault) and pushes again only if not. At-least-once edge: a query
the EDC created but does not list, or whose text the EDC changed, before that check is raised
twice.

Pull: only changes of the EDC's state since the last pull are applied, so a state pulled twice,
or a transition made since in TrialOps, is never applied again: answered -> answer (the EDC's
answer text), closed -> close ("Closed in the EDC (<vendor>)"), open again -> re-query,
cancelled -> cancel. The acting user is the EDC's system account.

Why the transitions go through the lifecycle's state table and audit helper rather than
query_answer / query_close / query_requery: those check the actor's role at the site, and the
system account has none (nor should it: it would then see and change every site's queries in
the UI's terms). The EDC already checked who did it; here it is recorded, the way
queries_auto_close records an agent's close. The EDC's re-query text is not put through the
compliance check for the same reason: refusing it would leave the two systems disagreeing.
"""

from datetime import timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from queries.lifecycle import SOURCE_STATES, query_locked, query_record
from queries.models import Query, QueryEdcLink, QueryMessage
from queries.sla import query_due_date
from studies.edc.base import EdcAdapter, EdcError, EdcNotSupported, OutboundQuery, QueryState, adapter_for
from studies.models import EdcConnection

logger = structlog.get_logger(__name__)


def queries_edc_sync(*, connection: EdcConnection, actor, adapter: EdcAdapter | None = None) -> dict:
    """Push the study's released queries to the connection's EDC, then pull their states. A vendor
    whose API has no queries (REDCap) is a no-op, said in the log and the result."""
    adapter = adapter or adapter_for(connection)
    try:
        adapter.push_queries([])  # an empty push makes no call; a vendor without queries refuses it
    except EdcNotSupported:
        logger.info("edc_queries_not_supported", connection_id=connection.pk, vendor=connection.vendor)
        return {"supported": False, "pushed": 0, "applied": 0}
    pushed = queries_edc_push(connection=connection, adapter=adapter)
    applied = queries_edc_pull(connection=connection, adapter=adapter, actor=actor)
    return {"supported": True, "pushed": pushed, "applied": applied}


# -- push -------------------------------------------------------------------------------------

_QUERY_RELATED = ("query__subject", "query__data_point__visit__definition", "query__data_point__form",
                  "query__data_point__item")


def _to_push(connection: EdcConnection):
    """Open queries released to the site, on a data point (the EDC addresses queries by item), raised
    here (not imported from an EDC) and not yet claimed for this connection. Answered or closed ones
    never pushed are settled already: raising them in the EDC would ask the site again."""
    linked = QueryEdcLink.objects.filter(query=OuterRef("pk"), connection=connection)
    return (Query.objects.filter(study_id=connection.study_id, state=Query.State.OPEN, released_at__isnull=False,
                                 data_point__isnull=False, external_id="")
            .exclude(origin=Query.Origin.IMPORTED).filter(~Exists(linked))
            .select_related(*(name.removeprefix("query__") for name in _QUERY_RELATED)).order_by("pk"))


def _lease() -> timedelta:
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)


def _claim_new(query: Query, connection: EdcConnection) -> QueryEdcLink | None:
    try:
        with transaction.atomic():
            now = timezone.now()
            return QueryEdcLink.objects.create(query=query, connection=connection, attempts=1, claimed_at=now,
                                               lease_until=now + _lease())
    except IntegrityError:  # another sync claimed it between our read and our insert
        return None


def _claim_retry(link: QueryEdcLink) -> bool:
    """Compare-and-set on a pending link whose lease is free or ran out."""
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    fields = {"lease_until": now + _lease(), "attempts": link.attempts + 1, "claimed_at": now}
    if QueryEdcLink.objects.filter(free, pk=link.pk, status=QueryEdcLink.Status.PENDING).update(**fields) != 1:
        return False  # another sync holds it
    for name, value in fields.items():
        setattr(link, name, value)
    return True


def _outbound(link: QueryEdcLink) -> OutboundQuery:
    query = link.query
    point = query.data_point
    return OutboundQuery(local_id=link.local_id, subject_key=query.subject.subject_id,
                         visit_oid=point.visit.definition.oid, form_oid=point.form.oid, item_oid=point.item.oid,
                         text=query.text, repeat_key=point.repeat_key)


def _already_in_edc(link: QueryEdcLink, remote: list[QueryState], taken: set[str]) -> str:
    """The EDC's id of the query if an earlier attempt raised it, else ''."""
    sent = _outbound(link)
    for state in remote:
        if state.remote_id == sent.local_id:
            return state.remote_id
    for state in remote:
        if state.remote_id not in taken and (state.subject_key, state.item_oid, state.text) == (
                sent.subject_key, sent.item_oid, sent.text):
            return state.remote_id
    return ""


def _record(link: QueryEdcLink, remote_id: str) -> None:
    link.status, link.remote_id, link.state_pushed = QueryEdcLink.Status.PUSHED, remote_id, link.query.state
    link.pushed_at, link.lease_until, link.last_error = timezone.now(), None, ""
    link.save(update_fields=["status", "remote_id", "state_pushed", "pushed_at", "lease_until", "last_error"])


def _push(link: QueryEdcLink, adapter: EdcAdapter) -> None:
    outbound = _outbound(link)
    try:
        remote_id = adapter.push_queries([outbound])[outbound.local_id]
    except EdcError as error:
        # Free the lease now: the next sync asks the EDC whether it got the query before pushing again.
        link.lease_until, link.last_error = None, str(error)[:2000]
        link.save(update_fields=["lease_until", "last_error"])
        raise
    _record(link, remote_id)


def queries_edc_push(*, connection: EdcConnection, adapter: EdcAdapter) -> int:
    """Raise the queries not yet in the EDC, one by one (claim, push, record); returns how many were
    raised or found there. The first failure stops the push (the EDC is likely down) and is raised
    for the sync task to retry."""
    done = 0
    retries = [link for link in QueryEdcLink.objects.filter(connection=connection, status=QueryEdcLink.Status.PENDING)
               .select_related(*_QUERY_RELATED).order_by("pk") if _claim_retry(link)]
    if retries:
        remote = adapter.pull_query_states()
        taken = set(QueryEdcLink.objects.filter(connection=connection).exclude(remote_id="")
                    .values_list("remote_id", flat=True))
        for link in retries:
            if found := _already_in_edc(link, remote, taken):
                logger.info("edc_query_found_on_retry", link_id=link.pk, remote_id=found)
                _record(link, found)
                taken.add(found)
            else:
                _push(link, adapter)
            done += 1
    for query in _to_push(connection):
        if link := _claim_new(query, connection):
            _push(link, adapter)
            done += 1
    return done


# -- pull -------------------------------------------------------------------------------------

def _follow(query: Query, remote: QueryState, *, actor, vendor: str) -> str:
    """Make the query take the EDC's state; returns the transition done, or '' when there is none
    to do (already there, or a move the lifecycle does not have, such as re-opening a closed one)."""
    now = timezone.now()
    where = f"in the EDC ({vendor})"
    if remote.state == Query.State.ANSWERED and query.state in SOURCE_STATES["answer"]:
        query.state, query.answered_at = Query.State.ANSWERED, now
        query_record(query, actor=actor, reason=f"Answered {where}", kind=QueryMessage.Kind.ANSWER,
                     text=remote.response.strip() or f"Answered {where}")
        return "answer"
    if remote.state == Query.State.CLOSED and query.state in SOURCE_STATES["close"]:
        query.state, query.resolution, query.closed_at = Query.State.CLOSED, Query.Resolution.OTHER, now
        query_record(query, actor=actor, reason=f"Closed {where}", kind=QueryMessage.Kind.CLOSE, text=f"Closed {where}")
        return "close"
    if remote.state == Query.State.OPEN and query.state in SOURCE_STATES["requery"]:
        query.state, query.escalation = Query.State.OPEN, Query.Escalation.SITE
        query.due_date = query_due_date(query=query, start=now)
        query_record(query, actor=actor, reason=f"Re-opened {where}", kind=QueryMessage.Kind.REQUERY,
                     text=f"Re-opened {where}")
        return "requery"
    if remote.state == Query.State.CANCELLED and query.state in SOURCE_STATES["cancel"]:
        query.state, query.cancelled_at = Query.State.CANCELLED, now
        query_record(query, actor=actor, reason=f"Cancelled {where}", kind=QueryMessage.Kind.NOTE,
                     text=f"Cancelled {where}")
        return "cancel"
    return ""


def _apply(link_id: int, remote: QueryState, *, actor, vendor: str) -> bool:
    with transaction.atomic():
        # The link row lock makes two overlapping pulls apply a state once.
        link = QueryEdcLink.objects.select_for_update().get(pk=link_id)
        if link.state_pulled == remote.state:
            return False
        query = query_locked(link.query)
        done = _follow(query, remote, actor=actor, vendor=vendor)
        if not done and query.state != remote.state:
            logger.warning("edc_query_state_not_followed", query_id=query.pk, local=query.state, remote=remote.state)
        link.state_pulled, link.pulled_at = remote.state, timezone.now()
        link.save(update_fields=["state_pulled", "pulled_at"])
        return bool(done)


def queries_edc_pull(*, connection: EdcConnection, adapter: EdcAdapter, actor) -> int:
    """Apply the EDC's state changes to the queries raised through this connection; returns the
    number of transitions made. Nothing is asked of the EDC while no query was pushed."""
    links = dict(QueryEdcLink.objects.filter(connection=connection, status=QueryEdcLink.Status.PUSHED)
                 .values_list("remote_id", "pk"))
    if not links:
        return 0
    vendor = connection.get_vendor_display()
    applied = 0
    for remote in adapter.pull_query_states():
        if remote.remote_id in links:
            applied += _apply(links[remote.remote_id], remote, actor=actor, vendor=vendor)
    return applied
