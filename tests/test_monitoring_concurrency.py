"""The monitoring plan under concurrent writers (PostgreSQL row locks; SQLite serialises every
writer): two schedulings of a study at once store one plan, not two; a move made while another
one is uncommitted waits for it and is checked against it; a scheduling does not hold the study
row, so an import of the study's clinical data goes on while the solver runs; two first saves of
a visit report make one report."""

import datetime
import itertools
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, connections, transaction

from sdv.monitoring import services
from sdv.monitoring.checker import check
from sdv.monitoring.models import MonitoringVisit, VisitReport
from sdv.monitoring.plan_import import monitoring_plan_import
from sdv.monitoring.problem import Visit
from sdv.monitoring.services import (
    MoveRefused,
    monitoring_plan_schedule,
    monitoring_visit_move,
    problem_build,
    visit_report_save,
)
from studies.ingest.base import import_create, import_execute
from studies.models import Import
from tests.conftest import skip_or_fail
from tests.factories import SiteFactory, StudyFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)
PLAN = Path(__file__).parent / "data" / "monitoring" / "plan_small.json"
TODAY = datetime.date(2026, 3, 2)


@pytest.fixture
def study():
    if connection.vendor != "postgresql":
        skip_or_fail("concurrent writers need PostgreSQL (DATABASE_URL)", required_by="TRIALOPS_REQUIRE_SERVICES")
    study = StudyFactory(protocol_id="MON-RACE")
    for number in ("701", "702", "703", "704"):
        SiteFactory(study=study, number=number)
    monitoring_plan_import(study=study, raw=PLAN.read_bytes(), actor=UserFactory(username="sponsor.r"))
    return study


def in_thread(target, results: list, *args, **kwargs) -> threading.Thread:
    def run():
        try:
            results.append(target(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            results.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def stored_plan(study):
    problem, _ = problem_build(study=study, plan=services.plan_in_force(study=study), today=TODAY)
    return problem


def wait_for_a_lock_wait(timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # the view is a snapshot per transaction
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database() AND pid <> pg_backend_pid()")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    pytest.fail("the second writer never waited for the first one's lock")


def test_two_schedulings_at_once_store_one_plan(study):
    actor = UserFactory(username="agent.race")
    start = threading.Barrier(2)
    results: list = []

    def schedule():
        start.wait(10)
        return monitoring_plan_schedule(study=study, actor=actor, today=TODAY, time_limit=2)

    threads = [in_thread(schedule, results) for _ in range(2)]
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and not [r for r in results if isinstance(r, Exception)], results
    visits = MonitoringVisit.objects.filter(study=study).exclude(status="cancelled")
    # The second waited for the first, found its plan and kept it visit for visit.
    assert sorted(r["added"] for r in results) == [0, visits.count()] and visits.count() > 0
    assert sorted(r["kept"] for r in results) == [0, visits.count()]
    problem = stored_plan(study)
    assert check(problem, problem.visits) == []


def _same_day_pair(problem) -> tuple[Visit, Visit, datetime.date]:
    """Two on-site visits of one monitor and a day either may move to alone, but not both."""
    on_site = [v for v in problem.visits if v.kind == "on_site"]
    days = sorted({problem.start + datetime.timedelta(days=k) for k in range(problem.days)})

    def breaches(changes: dict) -> set:
        visits = [Visit(**{**v.__dict__, "date": changes.get(v.id, v.date)}) for v in problem.visits]
        return {b.constraint for b in check(problem, visits) if not b.past}

    alone = {v.id: {day for day in days if day != v.date and day.weekday() < 5 and not breaches({v.id: day})}
             for v in on_site}
    for a, b in itertools.combinations(on_site, 2):
        if a.monitor == b.monitor:
            for day in sorted(alone[a.id] & alone[b.id] - {a.date, b.date}):
                if "one_on_site_a_day" in breaches({a.id: day, b.id: day}):
                    return a, b, day
    pytest.fail("the plan has no two visits that can each, but not both, move to one day")


def test_a_move_made_while_another_is_uncommitted_waits_and_is_checked_against_it(study):
    actor = UserFactory(username="cra.mover")
    monitoring_plan_schedule(study=study, actor=actor, today=TODAY, time_limit=2)
    first, second, day = _same_day_pair(stored_plan(study))
    results: list = []
    with transaction.atomic():
        monitoring_visit_move(visit=MonitoringVisit.objects.get(pk=first.id), date=day, actor=actor,
                              reason="Site asked", today=TODAY)
        thread = in_thread(monitoring_visit_move, results, visit=MonitoringVisit.objects.get(pk=second.id), date=day,
                           actor=actor, reason="Other site asked", today=TODAY)
        wait_for_a_lock_wait()
    thread.join(60)
    [refused] = results
    assert isinstance(refused, MoveRefused) and refused.constraint == "one_on_site_a_day", refused
    assert MonitoringVisit.objects.get(pk=first.id).date == day
    assert MonitoringVisit.objects.get(pk=second.id).date == second.date
    problem = stored_plan(study)
    assert check(problem, problem.visits) == []


def test_an_import_of_the_study_goes_on_while_its_visits_are_being_scheduled(study, monkeypatch):
    actor = UserFactory(username="importer")
    solving, resume = threading.Event(), threading.Event()
    real_solve = services.solve

    def paused_solve(*args, **kwargs):  # the real solver, held at its start until the import is done
        solving.set()
        resume.wait(10)
        return real_solve(*args, **kwargs)

    monkeypatch.setattr(services, "solve", paused_solve)
    results: list = []
    thread = in_thread(monitoring_plan_schedule, results, study=study, actor=actor, today=TODAY, time_limit=2)
    try:
        assert solving.wait(30)
        started = time.monotonic()
        record = import_execute(record=import_create(source=Import.Source.ODM, actor=actor, study=study),
                                actor=actor, load=lambda run: None)
        waited = time.monotonic() - started
        still_solving = not resume.is_set() and thread.is_alive()
    finally:
        resume.set()
        thread.join(60)
    assert record.status == Import.Status.SUCCEEDED and still_solving and waited < 5, waited
    assert results and not isinstance(results[0], Exception) and results[0]["visits"] > 0


def test_two_first_saves_of_a_visit_report_at_once_make_one_report(study):
    actor, other = UserFactory(username="cra.one"), UserFactory(username="cra.two")
    monitoring_plan_schedule(study=study, actor=actor, today=TODAY, time_limit=2)
    visit = MonitoringVisit.objects.filter(study=study, kind="on_site").first()
    results: list = []
    with transaction.atomic():
        visit_report_save(visit=visit, actor=actor, submit=False, summary="First draft")
        thread = in_thread(visit_report_save, results, visit=visit, actor=other, submit=False, findings="Seen too")
        wait_for_a_lock_wait()
    thread.join(60)
    assert not isinstance(results[0], Exception), results
    report = VisitReport.objects.get(visit=visit)
    assert (report.summary, report.findings, report.author) == ("First draft", "Seen too", actor)
    assert [h.history_user for h in report.history.order_by("history_date")] == [actor, other]
