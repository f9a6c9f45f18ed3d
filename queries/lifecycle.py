"""The QueryTracker: a query's lifecycle, who may move it, and the audit of every move.

States (Rave / ODM 2.0 style, DOMAIN.md "Queries"):

    Candidate --release--> Open --answer--> Answered --close--> Closed
        |                   ^  \\                |
        | edit (text)       |   \\--close-->    |
        |                   +----requery--------+
        +--discard--> Cancelled <--cancel-- any state but Closed

Every transition is one service here: keyword-only, atomic, the row locked (select_for_update),
a thread message written (question on release, answer, re-query, closing note, a note for
cancel/discard/reassign) and a history row naming the actor and the reason (studies.audit).

Who may do what (capabilities in studies.selectors.CAPABILITIES, checked at the query's site,
so a CRA acts at the sites granted to them and site staff at their own site only):

| transition               | allowed to                                                        |
|--------------------------|-------------------------------------------------------------------|
| create (manual)          | data manager; CRA at their sites                                  |
| release, edit, discard   | data manager (candidates are invisible to site staff and CRAs)    |
| answer                   | site coordinator, investigator, at their own site                 |
| requery, close           | data manager; CRA at their sites                                  |
| cancel                   | data manager; a CRA only a query they raised, at their sites      |
| reassign (marking group) | data manager; CRA at their sites                                  |

Sponsors, medical monitors and auditors read and change nothing: DOMAIN.md has the sponsor own
the study and read reports, the medical monitor review safety (a clinical signal goes to medical
review, not to a query), the auditor change nothing. A superuser may do everything. Agents
(`agent.<name>` system users, agents.identity) do not take part in the matrix: they create
system queries (Candidate, unless the study's policy releases them) and close them automatically
when the data is corrected (`queries_auto_close`); everything else is for people.

A refused transition raises TransitionRefused (403 for a role, 400 for a state or a missing
text/reason) and changes nothing.
"""


from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.identity import AGENT_USERNAME_PREFIX
from queries.compliance import compliance_check
from queries.generator import candidate_policy_allows_release
from queries.models import Discrepancy, Query, QueryMessage
from queries.selectors import query_list
from queries.sla import query_due_date
from studies.audit import set_audit
from studies.models import DataPoint, Subject, SubjectVisit
from studies.selectors import user_can

# From which states each transition may start.
SOURCE_STATES = {
    "release": {Query.State.CANDIDATE},
    "edit": {Query.State.CANDIDATE},
    "discard": {Query.State.CANDIDATE},
    "answer": {Query.State.OPEN},
    "requery": {Query.State.ANSWERED},
    "close": {Query.State.OPEN, Query.State.ANSWERED},
    "cancel": {Query.State.CANDIDATE, Query.State.OPEN, Query.State.ANSWERED},
    "reassign": {Query.State.CANDIDATE, Query.State.OPEN, Query.State.ANSWERED},
}
TRANSITIONS = tuple(SOURCE_STATES)
CAPABILITY = {"release": "release_query", "edit": "release_query", "discard": "release_query",
              "answer": "answer_query", "requery": "close_query", "close": "close_query",
              "cancel": "cancel_query", "reassign": "reassign_query"}
_VERBS = {"release": ("release", "released"), "edit": ("edit", "edited"), "discard": ("discard", "discarded"),
          "answer": ("answer", "answered"), "requery": ("re-query", "re-queried"), "close": ("close", "closed"),
          "cancel": ("cancel", "cancelled"), "reassign": ("reassign", "reassigned")}


class TransitionRefused(Exception):
    """A transition (or a new query) refused: `reason` says why, `reasons` lists every reason (the
    compliance check may give several), `status` is 403 for a role, 400 for anything else."""

    def __init__(self, reason: str, *, status: int = 400, reasons: list[str] | None = None,
                 query_id: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.reasons = reasons or [reason]
        self.query_id = query_id


def is_agent(user) -> bool:
    return bool(user and user.username.startswith(AGENT_USERNAME_PREFIX) and not user.has_usable_password())


def _visible(user, query: Query) -> bool:
    return query_list(user=user).filter(pk=query.pk).exists()


def _role_allows(user, query: Query, transition: str) -> bool:
    if not user or not user.is_authenticated or is_agent(user) or not _visible(user, query):
        return False
    if user_can(user=user, capability=CAPABILITY[transition], site=query.site):
        return True
    return (transition == "cancel" and query.created_by_id == user.pk
            and user_can(user=user, capability="cancel_own_query", site=query.site))


def query_transition_allowed(*, user, query: Query, transition: str) -> bool:
    """May `user` do `transition` on `query` now (their role at its site, and its state)?"""
    if transition not in SOURCE_STATES:
        raise ValueError(f"Unknown transition {transition!r}")
    return query.state in SOURCE_STATES[transition] and _role_allows(user, query, transition)


def _check(actor, query: Query, transition: str) -> None:
    if not _role_allows(actor, query, transition):
        raise TransitionRefused(f"Your role may not {_VERBS[transition][0]} this query.", status=403,
                                query_id=query.pk)
    if query.state not in SOURCE_STATES[transition]:
        raise TransitionRefused(f"A query in state {query.get_state_display()} cannot be {_VERBS[transition][1]}.",
                                query_id=query.pk)


def _required(value: str, message: str, query: Query | None = None) -> str:
    value = (value or "").strip()
    if not value:
        raise TransitionRefused(message, query_id=query.pk if query else None)
    return value


def query_locked(query: Query) -> Query:
    """The query, locked for a transition (in the caller's transaction)."""
    # of=self: lock the query row only, not its site and study (the analyzer locks the study row).
    return Query.objects.select_for_update(of=("self",)).select_related("site", "study").get(pk=query.pk)


def query_record(query: Query, *, actor, reason: str, kind: str | None = None, text: str = "") -> Query:
    """Save a transition: the audited query row and, with `kind`, its message in the thread."""
    set_audit(query, actor=actor, reason=reason)
    query.save()
    if kind:
        message = QueryMessage(query=query, kind=kind, author=actor, text=text)
        set_audit(message, actor=actor, reason=reason)
        message.save()
    return query


def _compliance_context(subject: Subject, data_point: DataPoint | None) -> dict:
    context = {"subject_id": subject.subject_id, "site_language": subject.site.language}
    if data_point is not None:
        item = data_point.item
        context.update({"form": data_point.form.name, "visit": data_point.visit.definition.name,
                        "item": item.label, "item_oid": item.oid, "value": data_point.raw_value,
                        "units": data_point.units or item.units})
    return context


def _compliance_refusals(text: str, *, language: str, subject: Subject, data_point: DataPoint | None) -> list[str]:
    return compliance_check(text, language=language, context=_compliance_context(subject, data_point))


def _check_text(text: str, query: Query) -> None:
    refusals = _compliance_refusals(text, language=query.language or query.site.language, subject=query.subject,
                                    data_point=query.data_point)
    if refusals:
        raise TransitionRefused("The query text does not pass the compliance check.", reasons=refusals,
                                query_id=query.pk)


def _starts_as_candidate(*, actor, study, category: str, origin: str, confidence: float | None,
                         candidate: bool | None) -> tuple[bool, str]:
    """(candidate?, audit reason of the creation)."""
    if candidate is not None:
        return candidate, "Drafted for data-manager review" if candidate else "Raised"
    if origin != Query.Origin.RULE and not is_agent(actor):
        return False, "Raised manually"
    if confidence is not None and candidate_policy_allows_release(
            study=study, category=category, confidence=confidence):
        return False, (f"Raised and released automatically by the study's candidate policy "
                       f"(category {category}, confidence {confidence:.2f})")
    return True, "Raised as a candidate for data-manager review"


def query_create(*, actor, study, subject: Subject, data_point: DataPoint | None = None, text: str,
                 recipient: str = Query.Recipient.SITE, category: str = Query.Category.OTHER,
                 severity: str = Query.Severity.MINOR, origin: str = Query.Origin.MANUAL,
                 candidate: bool | None = None, rule_code: str = "", confidence: float | None = None,
                 language: str = "", text_origin: str = "", prompt_version: str = "") -> Query:
    """A new query. A person's starts Open (with its question in the thread and a due date); an
    agent's, or one from an edit check (origin rule), starts Candidate unless the study's policy
    releases it (`confidence` is what the policy compares). `candidate` set by the caller wins.
    The text goes through the compliance check: refused with its reasons."""
    if subject.study_id != study.pk or (data_point is not None and data_point.subject_id != subject.pk):
        raise TransitionRefused("The subject and data point must belong to the study.")
    site = subject.site
    if not is_agent(actor) and not user_can(user=actor, capability="raise_query", site=site):
        raise TransitionRefused("Your role may not raise queries at this site.", status=403)
    if candidate and not is_agent(actor) and not user_can(user=actor, capability="release_query", site=site):
        raise TransitionRefused("Only data managers draft candidate queries.", status=403)
    for value, choices, name in ((recipient, Query.Recipient, "recipient"), (category, Query.Category, "category"),
                                 (severity, Query.Severity, "severity"), (origin, Query.Origin, "origin")):
        if value not in choices.values:
            raise TransitionRefused(f"Unknown {name} {value!r}.")
    text = _required(text, "A query needs a text.")
    language = language or site.language
    refusals = _compliance_refusals(text, language=language, subject=subject, data_point=data_point)
    if refusals:
        raise TransitionRefused("The query text does not pass the compliance check.", reasons=refusals)
    is_candidate, reason = _starts_as_candidate(actor=actor, study=study, category=category, origin=origin,
                                                confidence=confidence, candidate=candidate)
    if not text_origin:
        text_origin = Query.TextOrigin.TEMPLATE if is_agent(actor) else Query.TextOrigin.PERSON
    now = timezone.now()
    query = Query(study=study, site=site, subject=subject, data_point=data_point, origin=origin, rule_code=rule_code,
                  category=category, severity=severity, recipient=recipient, text=text, created_by=actor,
                  created_at=now, language=language, prompt_version=prompt_version,
                  text_origin=text_origin,
                  state=Query.State.CANDIDATE if is_candidate else Query.State.OPEN,
                  released_at=None if is_candidate else now)
    with transaction.atomic():
        if not is_candidate:
            query.due_date = query_due_date(query=query, start=now)
        return query_record(query, actor=actor, reason=reason,
                            kind=None if is_candidate else QueryMessage.Kind.QUESTION, text=text)


def query_release(*, query: Query, actor, reason: str = "") -> Query:
    """Candidate -> Open: the site sees it from now on (its question enters the thread) and the
    SLA clock starts."""
    with transaction.atomic():
        query = query_locked(query)
        _check(actor, query, "release")
        now = timezone.now()
        query.state, query.released_at = Query.State.OPEN, now
        query.due_date = query_due_date(query=query, start=now)
        return query_record(query, actor=actor, reason=(reason or "").strip() or "Released to the site",
                            kind=QueryMessage.Kind.QUESTION, text=query.text)


def query_edit(*, query: Query, actor, text: str, reason: str) -> Query:
    """Change a candidate's text before release; the draft stays in the history."""
    with transaction.atomic():
        query = query_locked(query)
        _check(actor, query, "edit")
        text = _required(text, "The new text is empty.", query)
        reason = _required(reason, "Editing a query needs a reason.", query)
        if text == query.text:
            raise TransitionRefused("The text is unchanged.", query_id=query.pk)
        _check_text(text, query)
        query.text, query.text_origin = text, Query.TextOrigin.PERSON
        return query_record(query, actor=actor, reason=reason)


def query_discard(*, query: Query, actor, reason: str) -> Query:
    """Candidate -> Cancelled: never shown to the site."""
    with transaction.atomic():
        query = query_locked(query)
        _check(actor, query, "discard")
        reason = _required(reason, "Discarding a query needs a reason.", query)
        query.state, query.cancelled_at = Query.State.CANCELLED, timezone.now()
        return query_record(query, actor=actor, reason=reason, kind=QueryMessage.Kind.NOTE, text=f"Discarded: {reason}")


def query_answer(*, query: Query, actor, text: str) -> Query:
    with transaction.atomic():
        query = query_locked(query)
        _check(actor, query, "answer")
        text = _required(text, "An answer needs a text.", query)
        query.state, query.answered_at = Query.State.ANSWERED, timezone.now()
        return query_record(query, actor=actor, reason="Answered by the site", kind=QueryMessage.Kind.ANSWER, text=text)


def query_requery(*, query: Query, actor, text: str) -> Query:
    """Answered -> Open: the answer is not accepted. A new question, so a new due date and the
    escalation ladder starts again from the site."""
    with transaction.atomic():
        query = query_locked(query)
        _check(actor, query, "requery")
        text = _required(text, "A re-query needs a text.", query)
        _check_text(text, query)
        now = timezone.now()
        query.state, query.escalation = Query.State.OPEN, Query.Escalation.SITE
        query.due_date = query_due_date(query=query, start=now)
        return query_record(query, actor=actor, reason="Re-queried: the answer was not accepted",
                            kind=QueryMessage.Kind.REQUERY, text=text)


def query_close(*, query: Query, actor, reason: str, resolution: str = Query.Resolution.OTHER) -> Query:
    """Close a query with how it ended; "data confirmed correct" teaches the analyzer (its rule
    at that site is trusted less, the same value is not queried again)."""
    with transaction.atomic():
        query = query_locked(query)
        _check(actor, query, "close")
        reason = _required(reason, "Closing a query needs a reason.", query)
        if resolution not in Query.Resolution.values:
            raise TransitionRefused(f"Unknown resolution {resolution!r}.", query_id=query.pk)
        query.state, query.resolution, query.closed_at = Query.State.CLOSED, resolution, timezone.now()
        return query_record(query, actor=actor, reason=reason, kind=QueryMessage.Kind.CLOSE, text=reason)


def query_cancel(*, query: Query, actor, reason: str) -> Query:
    """Any state but Closed -> Cancelled: raised in error."""
    with transaction.atomic():
        query = query_locked(query)
        _check(actor, query, "cancel")
        reason = _required(reason, "Cancelling a query needs a reason.", query)
        query.state, query.cancelled_at = Query.State.CANCELLED, timezone.now()
        return query_record(query, actor=actor, reason=reason, kind=QueryMessage.Kind.NOTE, text=f"Cancelled: {reason}")


def query_reassign(*, query: Query, actor, recipient: str, reason: str) -> Query:
    """Change the marking group (who must answer)."""
    with transaction.atomic():
        query = query_locked(query)
        _check(actor, query, "reassign")
        reason = _required(reason, "Reassigning a query needs a reason.", query)
        if recipient not in Query.Recipient.values:
            raise TransitionRefused(f"Unknown recipient {recipient!r}.", query_id=query.pk)
        if recipient == query.recipient:
            raise TransitionRefused("The query already goes to that recipient.", query_id=query.pk)
        before = query.get_recipient_display()
        query.recipient = recipient
        return query_record(query, actor=actor, reason=reason, kind=QueryMessage.Kind.NOTE,
                            text=f"Reassigned from {before} to {query.get_recipient_display()}: {reason}")


BULK_ACTIONS = {"release": (query_release, set()), "close": (query_close, {"resolution"}),
                "cancel": (query_cancel, set()), "discard": (query_discard, set()),
                "reassign": (query_reassign, {"recipient"})}


def _bulk_service(action: str, reason: str, kwargs: dict):
    """The service of a bulk action, with its options and reason checked once for the batch."""
    if action not in BULK_ACTIONS:
        raise TransitionRefused(f"Unknown bulk action {action!r}; one of {', '.join(BULK_ACTIONS)}.")
    service, options = BULK_ACTIONS[action]
    if set(kwargs) - options:
        raise TransitionRefused(f"{action} takes no {', '.join(sorted(set(kwargs) - options))}.")
    if action == "reassign" and not kwargs.get("recipient"):
        raise TransitionRefused("reassign needs the new recipient.")
    return service, _required(reason, "A bulk action needs a reason.")


def queries_bulk(*, queries, actor, action: str, reason: str, **kwargs) -> list[Query]:
    """One action with one reason on many queries, all or nothing: each row is checked as if
    done alone, and the first refused row refuses the batch (its id in the error)."""
    service, reason = _bulk_service(action, reason, kwargs)
    ids = sorted({q.pk for q in queries})
    done = []
    with transaction.atomic():
        # Lock the whole batch first, in id order: two overlapping batches wait, never deadlock.
        locked = list(Query.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
        for query in locked:
            try:
                done.append(service(query=query, actor=actor, reason=reason, **kwargs))
            except TransitionRefused as error:
                raise TransitionRefused(f"Query {query.pk}: {error.reason}", status=error.status,
                                        reasons=error.reasons, query_id=query.pk) from error
    return done


def queries_bulk_each(*, queries, actor, action: str, reason: str,
                      **kwargs) -> list[tuple[Query, TransitionRefused | None]]:
    """One action with one reason on many queries, each on its own (its own transaction): a
    refused row changes nothing of itself and stops no other. (query, None) when done, (query,
    the refusal) when not, in id order."""
    service, reason = _bulk_service(action, reason, kwargs)
    results = []
    for query in sorted(queries, key=lambda q: q.pk):
        try:
            with transaction.atomic():
                locked = Query.objects.select_for_update().get(pk=query.pk)
                results.append((service(query=locked, actor=actor, reason=reason, **kwargs), None))
        except TransitionRefused as error:
            results.append((query, error))
    return results


def _data_corrected(query: Query) -> bool:
    """Has the queried data changed since the query was raised? The data point itself, or (for a
    query on a missing value or a visit) any data, visit or date of the subject."""
    since = query.created_at
    if query.data_point_id:
        return DataPoint.history.filter(id=query.data_point_id, history_date__gt=since).exists()
    return (DataPoint.history.filter(subject_id=query.subject_id, history_date__gt=since).exists()
            or SubjectVisit.history.filter(subject_id=query.subject_id, history_date__gt=since).exists()
            or Subject.history.filter(id=query.subject_id, history_date__gt=since, history_type="~").exists())


def _auto_closable(query: Query) -> bool:
    if query.origin != Query.Origin.RULE or query.state not in SOURCE_STATES["cancel"]:
        return False
    findings = Discrepancy.objects.filter(query=query)
    return (findings.exists() and not findings.filter(status=Discrepancy.Status.OPEN).exists()
            and _data_corrected(query))


def queries_auto_close(*, queries, actor, reason: str) -> list[Query]:
    """Close the system queries whose data was corrected and whose rule passes now (every
    discrepancy the query was raised for is resolved): resolution "data corrected", the audit
    reason saying so. A candidate the site never saw is cancelled instead. Other queries are left
    as they are (a person's query, a rule that passes because it changed, a query already
    closed). Only an agent closes this way. Returns the queries changed."""
    if not is_agent(actor):
        raise TransitionRefused("Only an agent closes queries automatically.", status=403)
    ids = queries.values("pk") if isinstance(queries, QuerySet) else [q.pk for q in queries]
    # One query narrows the set (system queries still active, no finding open); each one left is
    # checked again under its lock
    closable = (Query.objects.filter(pk__in=ids, origin=Query.Origin.RULE, state__in=SOURCE_STATES["cancel"])
                .exclude(discrepancies__status=Discrepancy.Status.OPEN).order_by("pk").values_list("pk", flat=True))
    changed = []
    for pk in list(closable):
        with transaction.atomic():
            query = Query.objects.select_for_update().get(pk=pk)
            if not _auto_closable(query):
                continue
            why = f"the value was corrected and edit check {query.rule_code} passes"
            note = f" ({reason.strip()})" if (reason or "").strip() else ""
            now = timezone.now()
            if query.state == Query.State.CANDIDATE:
                query.state, query.cancelled_at = Query.State.CANCELLED, now
                text, kind = f"Cancelled automatically before release: {why}{note}", QueryMessage.Kind.NOTE
            else:
                query.state, query.closed_at = Query.State.CLOSED, now
                query.resolution = Query.Resolution.CORRECTED
                text, kind = f"Closed automatically: {why}{note}", QueryMessage.Kind.CLOSE
            changed.append(query_record(query, actor=actor, reason=text, kind=kind, text=text))
    return changed
