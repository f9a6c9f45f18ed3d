"""Query SLAs: due dates, reminders and the escalation ladder (issue 6, DOMAIN.md "Queries").

A released query is due a number of business days after its release, per severity, counted in the
site's time zone (`query_due_date`; the lifecycle calls it on release and re-query). The
QueryTracker agent (agents/workflows/query_sla.yaml, hourly) runs `sla_sweep`, which sends each
open query's steps once per due date. Days are the site's: its business day starts at
`local_start_hour` in its time zone, and nothing is sent on its weekend.

    reminder                  due within `remind_before_business_days`    -> the addressees
    overdue                   1 business day past due                      -> the addressees
    escalation:cra            `escalate_every_business_days` past due      -> the site's CRAs
    escalation:investigator   twice that                                   -> the site's PIs
    escalation:sponsor        three times that                             -> the study's sponsor

The addressees are the query's marking group (site staff for a query to the site). Only queries
to the site climb the ladder. A re-query gives a new due date, hence a fresh set of steps.

Once: a step is claimed by inserting its QueryReminder row (unique query, step, due date) with
ON CONFLICT DO NOTHING ... RETURNING, so two sweeps that race (beat firing twice) send it once.
In-app notifications and the audited escalation commit with the claim; e-mails go out after the
commit, at most once (a mail server failure is logged, not retried: never the same reminder twice).

Business days are Monday to Friday (numpy's busday calendar); public holidays are not counted.
"""

import datetime
import functools
import zoneinfo
from collections import Counter
from typing import NamedTuple

import numpy as np
import structlog
from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import connection, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone
from guardian.shortcuts import get_users_with_perms

from agents.identity import agent_user
from agents.registry import Agent, register
from agents.services import agent_config_get, agent_config_validate
from queries.models import Notification, Query, QueryReminder
from queries.phrasebook import phrasebook_language
from studies.audit import set_audit
from studies.models import SITE_ROLES, STUDY_WIDE_ROLES, Role, Site, Study, StudyMembership

logger = structlog.get_logger(__name__)

AGENT_NAME = "QueryTracker"
DEFAULTS = {
    "due_business_days": {"critical": 2, "major": 5, "minor": 10},
    "remind_before_business_days": 1,
    "escalate_every_business_days": 2,
    "local_start_hour": 8,
    "email": True,
}
# The ladder above the site: step, level reached, who is told.
ESCALATIONS = (
    ("escalation:cra", Query.Escalation.CRA, (Role.CRA,)),
    ("escalation:investigator", Query.Escalation.INVESTIGATOR, (Role.INVESTIGATOR,)),
    ("escalation:sponsor", Query.Escalation.SPONSOR, (Role.SPONSOR,)),
)
ESCALATION_LEVEL = {step: level for step, level, _ in ESCALATIONS}
# Who answers a query of each marking group: the reminder and the overdue notice go to them.
ADDRESSEES = {
    Query.Recipient.SITE: SITE_ROLES,
    Query.Recipient.CRA: (Role.CRA,),
    Query.Recipient.DATA_MANAGEMENT: (Role.DATA_MANAGER,),
    Query.Recipient.CODING: (Role.DATA_MANAGER,),
    Query.Recipient.SAFETY: (Role.MEDICAL_MONITOR,),
}
QUERY_PAGE = "/queries/{id}/"  # the query page of the UI, linked from e-mails
# Every site's local date is at most this far ahead of UTC's (Pacific/Kiritimati, UTC+14).
MAX_UTC_OFFSET = datetime.timedelta(hours=14)


class Step(NamedTuple):
    query_id: int
    step: str
    due_date: datetime.date
    late: int  # business days past the due date


def sla_config(*, study_id: int, overrides: dict | None = None) -> dict:
    """The defaults, then the study's stored QueryTracker configuration, then `overrides`
    (dictionaries such as `due_business_days` are merged key by key)."""
    config = {**DEFAULTS, "due_business_days": dict(DEFAULTS["due_business_days"])}
    for layer in (agent_config_get(agent=AGENT_NAME, study_id=study_id).config, overrides or {}):
        for key, value in layer.items():
            config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
    return config


def query_due_date(*, query: Query, start: datetime.datetime) -> datetime.date:
    """The day `query` must be answered by: its severity's business days after `start`'s date in
    the site's time zone (a release on a Saturday counts from the Monday)."""
    if timezone.is_naive(start):
        raise ValueError("query_due_date needs an aware datetime")
    days = sla_config(study_id=query.study_id)["due_business_days"]
    local = start.astimezone(zoneinfo.ZoneInfo(query.site.timezone)).date()
    return np.busday_offset(local, days.get(query.severity, days["minor"]), roll="forward").astype(datetime.date)


def sla_sweep(*, study: Study | None = None, now: datetime.datetime | None = None,
              config: dict | None = None) -> dict:
    """Send the reminders, overdue notices and escalations that are due, each once. Without a
    study: every active study where the QueryTracker is not paused. `config` overrides the stored
    configuration (a workflow step's config). Returns counts."""
    now = now or timezone.now()
    if study is not None:
        studies = [study]
    else:
        studies = [s for s in Study.objects.filter(status=Study.Status.ACTIVE).order_by("pk")
                   if agent_config_get(agent=AGENT_NAME, study_id=s.pk).enabled]
    actor = agent_user(AGENT_NAME)
    counts = Counter(studies=len(studies))
    for each in studies:
        counts += _study_sweep(each, now=now, config=sla_config(study_id=each.pk, overrides=config), actor=actor)
    return {key: counts[key] for key in ("studies", "queries", "reminder", "overdue", "escalation", "escalated",
                                         "notifications", "emails", "unaddressed")}


def _steps_due(study: Study, *, now: datetime.datetime, config: dict) -> list[Step]:
    """The steps the study's open queries have reached today, sent or not (set-based: one read of
    the queries that can be due, business days counted by numpy over all of them at once)."""
    remind, every = config["remind_before_business_days"], config["escalate_every_business_days"]
    bound = np.busday_offset((now + MAX_UTC_OFFSET).date(), remind, roll="forward").astype(datetime.date)
    rows = list(Query.objects.filter(study=study, state=Query.State.OPEN, due_date__isnull=False,
                                     due_date__lte=bound).values_list("pk", "due_date", "recipient", "site_id"))
    if not rows:
        return []
    # "Today" at a site starts at its local_start_hour, so reminders arrive in working hours.
    start = datetime.timedelta(hours=config["local_start_hour"])
    today_at = {pk: (now.astimezone(zoneinfo.ZoneInfo(tz)) - start).date()
                for pk, tz in Site.objects.filter(pk__in={r[3] for r in rows}).values_list("pk", "timezone")}
    due = np.array([r[1] for r in rows], dtype="datetime64[D]")
    today = np.array([today_at[r[3]] for r in rows], dtype="datetime64[D]")
    day = np.timedelta64(1, "D")
    working = np.is_busday(today)  # nobody is chased on a site's weekend; Monday catches up
    ahead = today <= due
    left = np.busday_count(today, due)  # business days in [today, due)
    late = np.busday_count(due + day, today + day)  # business days in (due, today]
    steps = []
    for (pk, due_date, recipient, _), is_working, is_ahead, days_left, days_late in zip(
            rows, working.tolist(), ahead.tolist(), left.tolist(), late.tolist(), strict=True):
        if not is_working:
            continue
        if is_ahead and days_left <= remind:
            steps.append(Step(pk, "reminder", due_date, 0))
        if days_late >= 1:
            steps.append(Step(pk, "overdue", due_date, days_late))
            if recipient == Query.Recipient.SITE:
                reached = min(len(ESCALATIONS), days_late // every)
                steps += [Step(pk, step, due_date, days_late) for step, _, _ in ESCALATIONS[:reached]]
    return steps


def _study_sweep(study: Study, *, now: datetime.datetime, config: dict, actor) -> Counter:
    wanted = _steps_due(study, now=now, config=config)
    if not wanted:
        return Counter()
    sent = set(QueryReminder.objects.filter(query_id__in={s.query_id for s in wanted})
               .values_list("query_id", "step", "due_date"))  # cheap filter; the unique row decides races
    todo = [s for s in wanted if s[:3] not in sent]
    if not todo:
        return Counter()
    counts, notifications, messages = Counter(), [], []
    with transaction.atomic():
        # Lock what we act on (in id order: no deadlock between sweeps) and check it again, so a
        # query answered or re-queried since the read above is not chased.
        locked = {q.pk: q for q in Query.objects.select_for_update(of=("self",)).select_related("site", "subject")
                  .filter(pk__in={s.query_id for s in todo}, state=Query.State.OPEN).order_by("pk")}
        todo = [s for s in todo if s.query_id in locked and locked[s.query_id].due_date == s.due_date]
        audiences: dict[tuple, list] = {}
        people = {s: _step_audience(locked[s.query_id], s.step, audiences) for s in todo}
        claimed = _claim(todo, people, now=now)
        for s in todo:
            if (s.query_id, s.step) not in claimed:
                continue  # another sweep sent it
            query = locked[s.query_id]
            counts[s.step.partition(":")[0]] += 1
            counts["unaddressed"] += not people[s]
            context, rendered = _email_context(query, study=study, step=s), {}
            for user, language in people[s]:
                if language not in rendered:  # a site's staff share its language: render once per language
                    rendered[language] = sla_email_render(language=language, context=context)
                subject, body = rendered[language]
                notifications.append(Notification(user=user, query=query, kind=f"sla.{s.step}", text=subject,
                                                  created_at=now))
                if config["email"] and user.email:
                    messages.append(EmailMessage(subject, body, to=[user.email],
                                                 headers={"Auto-Submitted": "auto-generated"}))
            if s.step in ESCALATION_LEVEL:
                counts["escalated"] += _escalate(query, step=s, actor=actor)
        Notification.objects.bulk_create(notifications)
        counts.update(queries=len({query_id for query_id, _ in claimed}), notifications=len(notifications),
                      emails=len(messages))
        if messages:
            transaction.on_commit(functools.partial(_send, messages, study_id=study.pk))
    logger.info("query_sla_sweep", study_id=study.pk, **counts)
    return counts


_CLAIM_SQL = ("INSERT INTO {table} (query_id, step, due_date, recipients, sent_at) VALUES {values} "
              "ON CONFLICT (query_id, step, due_date) DO NOTHING RETURNING query_id, step")


def _claim(steps: list[Step], people: dict, *, now: datetime.datetime) -> set[tuple[int, str]]:
    """Insert the steps' QueryReminder rows; returns the (query id, step) pairs this call inserted.
    A row another sweep inserted (committed, or pending: the insert waits for it) is skipped."""
    recipients_field = QueryReminder._meta.get_field("recipients")
    sql = _CLAIM_SQL.replace("{table}", connection.ops.quote_name(QueryReminder._meta.db_table))
    claimed = set()
    with connection.cursor() as cursor:
        for first in range(0, len(steps), 500):
            batch, params = steps[first:first + 500], []
            for s in batch:
                recipients = [{"user_id": user.pk, "language": language, "email": bool(user.email)}
                              for user, language in people[s]]
                params += [s.query_id, s.step, connection.ops.adapt_datefield_value(s.due_date),
                           recipients_field.get_db_prep_save(recipients, connection),
                           connection.ops.adapt_datetimefield_value(now)]
            cursor.execute(sql.replace("{values}", ", ".join(["(%s, %s, %s, %s, %s)"] * len(batch))), params)
            claimed.update((query_id, step) for query_id, step in cursor.fetchall())
    return claimed


def _step_audience(query: Query, step: str, cache: dict) -> list[tuple]:
    roles = next((roles for name, _, roles in ESCALATIONS if name == step), None) or ADDRESSEES[query.recipient]
    key = (tuple(roles), query.site_id)
    if key not in cache:
        cache[key] = site_audience(site=query.site, roles=roles)
    return cache[key]


def site_audience(*, site: Site, roles) -> list[tuple]:
    """(user, language) of the active users holding one of `roles` for `site`: site staff of that
    site, CRAs granted the site (guardian), study-wide roles of its study. Site staff read the
    site's language; everyone else English."""
    scope = Q(role__in=SITE_ROLES, site=site) | Q(role__in=STUDY_WIDE_ROLES)
    if Role.CRA in roles:
        granted = get_users_with_perms(site, only_with_perms_in=["monitor_site"], with_group_users=True)
        scope |= Q(role=Role.CRA, user__in=granted.values("pk"))
    memberships = (StudyMembership.objects.filter(scope, study_id=site.study_id, role__in=roles, is_active=True,
                                                  user__is_active=True)
                   .select_related("user").order_by("user_id"))
    people, site_language = {}, phrasebook_language(site.language)
    for membership in memberships:
        if membership.role in SITE_ROLES or membership.user_id not in people:
            people[membership.user_id] = (membership.user, site_language if membership.role in SITE_ROLES else "en")
    return list(people.values())


def _escalate(query: Query, *, step: Step, actor) -> int:
    """Raise Query.escalation to the step's level (audited); 0 if it is there already."""
    level = ESCALATION_LEVEL[step.step]
    if query.escalation >= level:
        return 0
    query.escalation = level
    set_audit(query, actor=actor, reason=f"SLA: {step.late} business day(s) past the due date {step.due_date}; "
                                         f"escalated to {level.label} ({step.step})")
    query.save(update_fields=["escalation"])
    return 1


def _email_context(query: Query, *, study: Study, step: Step) -> dict:
    # No patient identifiers: the subject appears by its pseudonymous study id only, and the query
    # text (which may quote clinical values) stays behind the link.
    kind, _, level = step.step.partition(":")
    return {"step": kind, "level": level, "query_id": query.pk, "study": study.protocol_id,
            "site_number": query.site.number, "site_name": query.site.name, "subject_id": query.subject.subject_id,
            "severity": query.severity, "due_date": step.due_date.isoformat(), "days_overdue": step.late,
            "url": settings.TRIALOPS_BASE_URL + QUERY_PAGE.format(id=query.pk)}


def sla_email_render(*, language: str, context: dict) -> tuple[str, str]:
    """Subject (one line) and body of a reminder, overdue notice or escalation in `language` (the
    e-mail templates exist in every phrasebook language; any other language gets English)."""
    language = phrasebook_language(language)
    subject = render_to_string(f"queries/email/{language}/sla_subject.txt", context)
    body = render_to_string(f"queries/email/{language}/sla_body.txt", context)
    return " ".join(subject.split()), body.strip() + "\n"


def _send(messages: list[EmailMessage], *, study_id: int) -> None:
    try:
        sent = get_connection().send_messages(messages)
    except Exception as exc:  # the steps stay sent (at most once) and their in-app notifications stand
        logger.error("query_sla_email_failed", study_id=study_id, messages=len(messages), error=str(exc))
        return
    logger.info("query_sla_email_sent", study_id=study_id, sent=sent)


_DAYS = {"type": "integer", "minimum": 1, "maximum": 60}


@register
class QueryTrackerAgent(Agent):
    name = AGENT_NAME
    version = "1"
    description = ("Chases open queries: a reminder before the due date, an overdue notice, then escalation "
                   "site -> CRA -> PI -> sponsor, by e-mail in the reader's language and in-app, each step once.")
    config_schema = {
        "type": "object",
        "properties": {
            "due_business_days": {
                "type": "object", "properties": {"critical": _DAYS, "major": _DAYS, "minor": _DAYS},
                "additionalProperties": False,
                "description": "business days from release to the due date, per severity (default 2, 5, 10)",
            },
            "remind_before_business_days": {"type": "integer", "minimum": 0, "maximum": 20,
                                            "description": "remind this many business days before due (default 1)"},
            "escalate_every_business_days": {"type": "integer", "minimum": 1, "maximum": 30,
                                             "description": "one rung up the ladder per this many business days "
                                                            "overdue (default 2)"},
            "local_start_hour": {"type": "integer", "minimum": 0, "maximum": 23,
                                 "description": "site-local hour from which a day's steps go out (default 8)"},
            "email": {"type": "boolean", "description": "send e-mail as well as in-app notifications (default true)"},
        },
        "additionalProperties": False,
    }
    time_limit = 600

    def run(self, *, step) -> dict:
        overrides = step.input.get("config") or {}
        agent_config_validate(agent=self.name, config=overrides)
        study_id = step.input.get("study_id")
        if study_id is None:  # the hourly schedule: every active study
            return sla_sweep(config=overrides)
        study = Study.objects.filter(pk=study_id).first()
        if study is None:
            return {"studies": 0, "skipped": f"no study {study_id}"}
        return sla_sweep(study=study, config=overrides)
