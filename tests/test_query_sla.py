"""Query SLAs (issue 6): due dates in business days and the site's time zone, reminders and the
escalation ladder site -> CRA -> PI -> sponsor, each step once (also when two sweeps race), in
the reader's language, by e-mail and in-app. Time is frozen by passing `now=` explicitly.

January 2025: Friday 3, Monday 6, Tuesday 7, ..., Friday 10, Monday 13."""

import datetime
import threading
import time
from io import StringIO
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection, connections, transaction

from agents.identity import agent_user
from agents.models import AgentRun, Status
from agents.services import agent_config_set
from agents.workflow_spec import builtin_schedules, spec_parse
from config.celery_app import app
from queries.models import Notification, Query, QueryReminder
from queries.phrasebook import LANGUAGES, phrasebook_language
from queries.sla import query_due_date, sla_email_render, sla_sweep
from studies.models import Role
from studies.services import cra_site_assign, membership_grant
from tests.conftest import skip_or_fail
from tests.factories import SiteFactory, StudyFactory, SubjectFactory, UserFactory

UTC = datetime.UTC
TEXT = "Systolic blood pressure 300 mmHg at Visit 2 is outside 60-250 mmHg. Please verify against source."


def at(day: int, hour: int = 9, minute: int = 0) -> datetime.datetime:
    """A moment of January 2025, UTC (09:00 UTC is 10:00 in Paris)."""
    return datetime.datetime(2025, 1, day, hour, minute, tzinfo=UTC)


def jan(day: int) -> datetime.date:
    return datetime.date(2025, 1, day)


class World:
    """A study with a French site (Paris) and a German one, and one user per part of the ladder,
    plus people who must never be chased for the French site's queries."""

    def __init__(self, *, timezone="Europe/Paris", language="fr"):
        self.study = StudyFactory()
        self.site = SiteFactory(study=self.study, timezone=timezone, language=language)
        self.other_site = SiteFactory(study=self.study, timezone="Europe/Berlin", language="de")
        self.subject = SubjectFactory(site=self.site, subject_id="SUBJ-0042")
        self.users = {}
        for name, role, site in [
            ("coordinator", Role.SITE_COORDINATOR, self.site),
            ("pi", Role.INVESTIGATOR, self.site),
            ("cra", Role.CRA, None),
            ("sponsor", Role.SPONSOR, None),
            ("dm", Role.DATA_MANAGER, None),
            ("other_cra", Role.CRA, None),
            ("other_coordinator", Role.SITE_COORDINATOR, self.other_site),
        ]:
            self.users[name] = UserFactory(username=f"{name}_{self.study.pk}")
            membership_grant(user=self.users[name], study=self.study, role=role, site=site)
        cra_site_assign(cra=self.users["cra"], site=self.site)
        cra_site_assign(cra=self.users["other_cra"], site=self.other_site)

    def query(self, *, due=None, severity=Query.Severity.CRITICAL, state=Query.State.OPEN,
              recipient=Query.Recipient.SITE) -> Query:
        return Query.objects.create(study=self.study, site=self.site, subject=self.subject, severity=severity,
                                    state=state, recipient=recipient, due_date=due, text=TEXT)

    def emails(self, *names) -> set[str]:
        return {self.users[name].email for name in names}


def sent_to() -> set[str]:
    return {address for message in mail.outbox for address in message.to}


@pytest.fixture
def world(db):
    return World()


@pytest.fixture
def sweep(django_capture_on_commit_callbacks):
    """sla_sweep with its on-commit e-mails sent (the test's transaction never commits)."""

    def run(**kwargs) -> dict:
        mail.outbox.clear()
        with django_capture_on_commit_callbacks(execute=True):
            return sla_sweep(**kwargs)

    return run


# --- Due dates -------------------------------------------------------------------------------------


def test_due_dates_count_business_days_per_severity_across_the_weekend(world):
    released = at(3)  # Friday, 10:00 in Paris

    due = {severity: query_due_date(query=world.query(severity=severity), start=released)
           for severity in Query.Severity.values}

    assert due == {"critical": jan(7), "major": jan(10), "minor": jan(17)}
    assert all(isinstance(day, datetime.date) for day in due.values())


@pytest.mark.django_db
def test_due_dates_count_from_the_site_s_local_date():
    # Friday 20:00 UTC is Saturday 09:00 in Auckland (counted from Monday) but Friday noon in Los Angeles.
    released = at(3, 20)
    auckland = World(timezone="Pacific/Auckland", language="en").query(severity=Query.Severity.CRITICAL)
    los_angeles = World(timezone="America/Los_Angeles", language="en").query(severity=Query.Severity.CRITICAL)

    assert query_due_date(query=auckland, start=released) == jan(8)  # Mon 6 + 2 business days
    assert query_due_date(query=los_angeles, start=released) == jan(7)  # Fri 3 + 2 business days
    # Sunday 23:30 in Los Angeles is already Monday in UTC: still counted from Monday.
    assert query_due_date(query=los_angeles, start=at(6, 7, 30)) == jan(8)


@pytest.mark.django_db
def test_the_study_s_configuration_overrides_the_due_days_of_one_severity():
    configured, default = World(), World()
    agent_config_set(agent="QueryTracker", study_id=configured.study.pk,
                     config={"due_business_days": {"critical": 1}}, enabled=True, actor=configured.users["dm"])

    assert query_due_date(query=configured.query(severity="critical"), start=at(3)) == jan(6)
    assert query_due_date(query=configured.query(severity="major"), start=at(3)) == jan(10)  # merged default
    assert query_due_date(query=default.query(severity="critical"), start=at(3)) == jan(7)


def test_a_naive_start_is_refused(world):
    with pytest.raises(ValueError, match="aware"):
        query_due_date(query=world.query(), start=datetime.datetime(2025, 1, 3, 9))


def test_the_configuration_is_checked_against_the_agent_s_schema(world):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="due_business_days"):
        agent_config_set(agent="QueryTracker", study_id=world.study.pk, config={"due_business_days": {"critical": 0}},
                         enabled=True, actor=world.users["dm"])


# --- Reminders ---------------------------------------------------------------------------------------


def test_a_reminder_goes_to_the_site_staff_once_in_the_site_s_language(world, sweep):
    query = world.query(due=jan(7))  # Tuesday

    first = sweep(study=world.study, now=at(6))  # Monday 10:00 in Paris
    first_mail = list(mail.outbox)
    second = sweep(study=world.study, now=at(6, 15))

    assert (first["reminder"], first["notifications"], first["emails"], first["queries"]) == (1, 2, 2, 1)
    assert (second["reminder"], second["notifications"], second["emails"]) == (0, 0, 0)
    assert mail.outbox == []
    reminder = QueryReminder.objects.get()
    assert (reminder.query, reminder.step, reminder.due_date, reminder.sent_at) == (query, "reminder", jan(7), at(6))
    assert {r["user_id"] for r in reminder.recipients} == {world.users["coordinator"].pk, world.users["pi"].pk}
    assert {r["language"] for r in reminder.recipients} == {"fr"}
    assert {m.to[0] for m in first_mail} == world.emails("coordinator", "pi")
    message = first_mail[0]
    assert message.subject == f"[{world.study.protocol_id}] Query n° {query.pk} : échéance le 2025-01-07"
    assert "Merci d'y répondre dans l'EDC" in message.body and "SUBJ-0042" in message.body
    assert f"/queries/{query.pk}/" in message.body
    assert "300 mmHg" not in message.body  # the query text (clinical values) stays behind the link
    assert message.extra_headers["Auto-Submitted"] == "auto-generated"
    notes = Notification.objects.filter(query=query)
    assert {(n.user, n.kind) for n in notes} == {(world.users["coordinator"], "sla.reminder"),
                                                 (world.users["pi"], "sla.reminder")}
    assert all(n.text == message.subject and n.read_at is None for n in notes)


def test_the_site_s_day_starts_at_its_local_start_hour_and_skips_the_weekend(world, sweep):
    world.query(due=jan(7))

    assert sweep(study=world.study, now=at(4, 12))["reminder"] == 0  # Saturday
    assert sweep(study=world.study, now=at(6, 6, 30))["reminder"] == 0  # Monday 07:30 in Paris
    assert sweep(study=world.study, now=at(6, 7))["reminder"] == 1  # Monday 08:00 in Paris


@pytest.mark.django_db
def test_the_reminder_day_is_the_site_s_day(sweep):
    # Monday 20:00 UTC: already Tuesday 09:00 in Auckland, Monday noon in Los Angeles.
    auckland, los_angeles = World(timezone="Pacific/Auckland"), World(timezone="America/Los_Angeles")
    auckland.query(due=jan(8))
    los_angeles.query(due=jan(8))

    assert sweep(study=auckland.study, now=at(6, 20))["reminder"] == 1
    assert sweep(study=los_angeles.study, now=at(6, 20))["reminder"] == 0
    assert sweep(study=los_angeles.study, now=at(7, 20))["reminder"] == 1


def test_answered_closed_cancelled_candidate_and_undated_queries_are_not_chased(world, sweep):
    for state in (Query.State.ANSWERED, Query.State.CLOSED, Query.State.CANCELLED, Query.State.CANDIDATE):
        world.query(due=jan(2), state=state)
    world.query(due=None)

    counts = sweep(study=world.study, now=at(15))

    assert counts["queries"] == 0 and not QueryReminder.objects.exists() and not Notification.objects.exists()
    assert mail.outbox == []


def test_a_query_answered_before_its_step_is_sent_is_left_alone(world, sweep):
    query = world.query(due=jan(7))
    query.state = Query.State.ANSWERED
    query.save()

    assert sweep(study=world.study, now=at(8))["overdue"] == 0


# --- The escalation ladder ------------------------------------------------------------------------------


def test_the_ladder_climbs_one_rung_per_two_business_days_overdue(world, sweep):
    query = world.query(due=jan(7))  # Tuesday
    actor = agent_user("QueryTracker")

    def step(day: int) -> tuple[dict, set[str], list[str]]:
        counts = sweep(study=world.study, now=at(day))
        query.refresh_from_db()
        return counts, sent_to(), [m.subject for m in mail.outbox]

    counts, to, subjects = step(8)  # Wednesday: 1 business day overdue
    assert (counts["overdue"], counts["escalation"], query.escalation) == (1, 0, Query.Escalation.SITE)
    assert to == world.emails("coordinator", "pi")
    assert subjects[0].endswith(f"Query n° {query.pk} en retard")

    counts, to, subjects = step(9)  # Thursday: 2 -> the site's CRA, in English
    assert (counts["escalation"], counts["escalated"], query.escalation) == (1, 1, Query.Escalation.CRA)
    assert to == world.emails("cra")
    assert subjects == [f"[{world.study.protocol_id}] Overdue query {query.pk} escalated to the CRA"]

    counts, to, _ = step(10)  # Friday: 3, nothing new
    assert counts["notifications"] == 0 and to == set()

    counts, to, subjects = step(13)  # Monday: 4 -> the principal investigator, in the site's language
    assert query.escalation == Query.Escalation.INVESTIGATOR
    assert to == world.emails("pi")
    assert "transmise à l'investigateur principal" in subjects[0]

    counts, to, subjects = step(15)  # Wednesday: 6 -> the sponsor
    assert query.escalation == Query.Escalation.SPONSOR
    assert to == world.emails("sponsor")
    assert subjects[0].endswith("escalated to the sponsor")

    counts, to, _ = step(22)  # a week later: the ladder has no more rungs
    assert counts["notifications"] == 0 and to == set()

    assert list(QueryReminder.objects.filter(query=query).order_by("sent_at").values_list("step", "sent_at")) == [
        ("overdue", at(8)), ("escalation:cra", at(9)), ("escalation:investigator", at(13)),
        ("escalation:sponsor", at(15)),
    ]
    never = {"dm", "other_cra", "other_coordinator"}
    assert not Notification.objects.filter(user__in=[world.users[name] for name in never]).exists()
    history = query.history.filter(history_type="~").order_by("history_date")
    assert [(h.escalation, h.history_user, h.history_change_reason) for h in history] == [
        (1, actor, "SLA: 2 business day(s) past the due date 2025-01-07; escalated to CRA (escalation:cra)"),
        (2, actor, "SLA: 4 business day(s) past the due date 2025-01-07; escalated to Principal investigator "
                   "(escalation:investigator)"),
        (3, actor, "SLA: 6 business day(s) past the due date 2025-01-07; escalated to Sponsor (escalation:sponsor)"),
    ]


def test_a_sweep_that_missed_days_sends_every_rung_once_and_audits_each(world, sweep):
    query = world.query(due=jan(2))

    counts = sweep(study=world.study, now=at(15))  # 9 business days overdue
    again = sweep(study=world.study, now=at(16))

    assert (counts["overdue"], counts["escalation"], counts["escalated"]) == (1, 3, 3)
    assert again["notifications"] == 0
    query.refresh_from_db()
    assert query.escalation == Query.Escalation.SPONSOR
    assert list(query.history.filter(history_type="~").values_list("escalation", flat=True)) == [3, 2, 1]


def test_a_re_query_s_new_due_date_restarts_the_steps(world, sweep):
    query = world.query(due=jan(7))
    sweep(study=world.study, now=at(8))
    query.due_date = jan(14)  # the lifecycle's re-query
    query.save()

    assert sweep(study=world.study, now=at(15))["overdue"] == 1
    assert set(QueryReminder.objects.values_list("step", "due_date")) == {("overdue", jan(7)), ("overdue", jan(14))}


def test_the_step_configuration_changes_the_pace_and_can_turn_e_mail_off(world, sweep):
    query = world.query(due=jan(7))

    counts = sweep(study=world.study, now=at(8), config={"escalate_every_business_days": 1, "email": False})

    assert (counts["overdue"], counts["escalation"], counts["emails"]) == (1, 1, 0)
    assert mail.outbox == [] and Notification.objects.filter(query=query).count() == 3  # site staff + CRA


def test_queries_to_another_marking_group_reach_it_and_do_not_climb_the_site_ladder(world, sweep):
    world.query(due=jan(2), recipient=Query.Recipient.DATA_MANAGEMENT)

    counts = sweep(study=world.study, now=at(15))

    assert (counts["overdue"], counts["escalation"]) == (1, 0)
    assert sent_to() == world.emails("dm")


def test_a_step_with_nobody_to_tell_is_recorded_as_unaddressed(world, sweep):
    world.users["sponsor"].memberships.update(is_active=False)
    world.query(due=jan(2))

    counts = sweep(study=world.study, now=at(15))

    assert counts["unaddressed"] == 1
    assert QueryReminder.objects.get(step="escalation:sponsor").recipients == []


@pytest.mark.django_db
def test_the_scheduled_sweep_covers_active_studies_where_the_agent_is_not_paused(sweep):
    active, paused = World(), World()
    active.query(due=jan(7))
    paused.query(due=jan(7))
    agent_config_set(agent="QueryTracker", study_id=paused.study.pk, config={}, enabled=False,
                     actor=paused.users["dm"])

    counts = sweep(now=at(8))

    assert counts["studies"] == 1 and counts["overdue"] == 1
    assert set(QueryReminder.objects.values_list("query__study", flat=True)) == {active.study.pk}


# --- E-mail in every language -------------------------------------------------------------------------------

DUE_LABEL = {"en": "Due date:", "fr": "Échéance :", "de": "Fällig am:", "es": "Fecha límite:", "it": "Scadenza:",
             "pt": "Prazo:", "nl": "Uiterste datum:", "pl": "Termin:", "ja": "回答期限：", "zh": "回复期限："}
STEPS = [("reminder", ""), ("overdue", ""), ("escalation", "cra"), ("escalation", "investigator"),
         ("escalation", "sponsor")]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_step_renders_in_every_language(language):
    assert set(DUE_LABEL) == set(LANGUAGES)
    rendered = []
    for step, level in STEPS:
        context = {"step": step, "level": level, "query_id": 4711, "study": "ACME-001 & Co", "site_number": "101",
                   "site_name": "Hôpital <Nord>", "subject_id": "SUBJ-0042", "severity": "major",
                   "due_date": "2025-01-07", "days_overdue": 0 if step == "reminder" else 3,
                   "url": "https://trialops.example/queries/4711/"}
        subject, body = sla_email_render(language=language, context=context)
        assert "\n" not in subject and "4711" in subject and "ACME-001 & Co" in subject
        assert "{" not in subject + body and "&amp;" not in body  # plain text, nothing left unrendered
        assert DUE_LABEL[language] in body and "Hôpital <Nord>" in body and "SUBJ-0042" in body
        assert "https://trialops.example/queries/4711/" in body
        assert ("3" in body.split(DUE_LABEL[language])[1]) == (step != "reminder")
        rendered.append((subject, body))
    assert len(set(rendered)) == len(STEPS)  # each step says something different
    if language != "en":
        english = sla_email_render(language="en", context=context)
        assert "escalated" not in body and body != english[1]


def test_unknown_languages_fall_back_to_english_and_regional_codes_to_their_language():
    assert [phrasebook_language(code) for code in ("pt-BR", "zh_CN", "FR", "xx", "", None)] == [
        "pt", "zh", "fr", "en", "en", "en"]


# --- Once, also when two sweeps race ------------------------------------------------------------------------


@pytest.fixture
def postgresql():
    # SQLite's in-memory test database refuses a second writer at once ("table is locked").
    if connection.vendor != "postgresql":
        skip_or_fail("racing sweeps need PostgreSQL (DATABASE_URL)", required_by="TRIALOPS_REQUIRE_SERVICES")


def _sweep_in_thread(results: list, **kwargs):
    try:
        results.append(sla_sweep(**kwargs))
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_the_same_time_send_each_step_once(postgresql):
    world = World()
    for _ in range(5):
        world.query(due=jan(7))
    mail.outbox.clear()
    start = threading.Barrier(2)
    results = []

    def racer():
        start.wait()
        _sweep_in_thread(results, study=world.study, now=at(9))

    threads = [threading.Thread(target=racer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 2
    assert sum(r["overdue"] for r in results) == 5 and sum(r["escalation"] for r in results) == 5
    assert QueryReminder.objects.count() == 10
    assert len(mail.outbox) == 5 * 2 + 5  # each query: site staff once, the CRA once
    assert Notification.objects.count() == 15


@pytest.mark.django_db(transaction=True)
def test_a_sweep_that_read_before_the_other_committed_still_sends_nothing_twice(postgresql):
    """The second sweep reads while the first has claimed but not committed: it passes the cheap
    filter, waits on the lock, and then the unique row refuses its claim."""
    world = World()
    query = world.query(due=jan(7))
    agent_user("QueryTracker")  # exists in production: the race is on the query, not on this row
    mail.outbox.clear()
    results = []
    with transaction.atomic():
        first = sla_sweep(study=world.study, now=at(8))
        second = threading.Thread(target=_sweep_in_thread, args=(results,),
                                  kwargs={"study": world.study, "now": at(8)})
        second.start()
        _wait_for_a_lock_wait()
    second.join(timeout=60)

    assert first["overdue"] == 1 and results[0]["overdue"] == 0 and results[0]["notifications"] == 0
    assert QueryReminder.objects.filter(query=query).count() == 1
    assert sent_to() == world.emails("coordinator", "pi") and len(mail.outbox) == 2


def _wait_for_a_lock_wait(timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # the view is a snapshot per transaction
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database() AND query LIKE 'SELECT \"queries_query\".%%'")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    pytest.fail("the second sweep never waited for the first one's lock")


# --- The workflow and the agent on a real worker --------------------------------------------------------------


def test_the_workflow_parses_and_runs_hourly_on_beat():
    spec = spec_parse(Path("agents/workflows/query_sla.yaml").read_text(), origin="query_sla.yaml")

    assert [(s["key"], s["agent"]) for s in spec["steps"]] == [("chase", "QueryTracker")]
    assert ("query_sla", {"cron": "5 * * * *"}) in builtin_schedules()
    app.finalize(auto=True)  # the schedule triggers become beat entries when the app is finalized
    entry = app.conf.beat_schedule["workflow query_sla"]
    assert (entry["task"], entry["args"]) == ("agents.workflow_start_scheduled", ("query_sla",))


def _a_zone_where_today_is_a_business_day() -> tuple[str, int]:
    """A time zone and local_start_hour under which the sites's day is a business day right now
    (the worker uses the real clock), with the day not about to end."""
    now = datetime.datetime.now(UTC)
    for zone in ("UTC", "Etc/GMT+12", "Etc/GMT-14"):
        for hour in range(24):
            local = now.astimezone(ZoneInfo(zone)) - datetime.timedelta(hours=hour)
            if np.is_busday(local.date()) and local.time() < datetime.time(23, 45):
                return zone, hour
    pytest.fail(f"no business day anywhere at {now}")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_run_agent_chases_a_study_s_overdue_queries_on_a_worker():
    zone, start_hour = _a_zone_where_today_is_a_business_day()
    world = World(timezone=zone)
    agent_config_set(agent="QueryTracker", study_id=world.study.pk, config={"local_start_hour": start_hour},
                     enabled=True, actor=world.users["dm"])
    query = world.query(due=datetime.date.today() - datetime.timedelta(days=40))
    mail.outbox.clear()

    call_command("run_agent", "QueryTracker", "--study", str(world.study.pk), stdout=StringIO())

    run = AgentRun.objects.get(workflow="agent.QueryTracker")
    assert run.status == Status.SUCCEEDED
    output = run.steps.get().output
    assert (output["overdue"], output["escalation"], output["escalated"]) == (1, 3, 3)
    query.refresh_from_db()
    assert query.escalation == Query.Escalation.SPONSOR
    assert query.history.filter(history_user=agent_user("QueryTracker")).count() == 3
    assert set(QueryReminder.objects.filter(query=query).values_list("step", flat=True)) == {
        "overdue", "escalation:cra", "escalation:investigator", "escalation:sponsor"}
    assert sent_to() == world.emails("coordinator", "pi", "cra", "sponsor")
    assert len(mail.outbox) == 5  # site staff, CRA, PI, sponsor: one e-mail per rung and person
