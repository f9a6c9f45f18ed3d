"""`/api/v1/monitoring-visits/`: the fields and filters the issue lists, scoped reads (site staff see
only their site's visits), and confirm / move / cancel / complete for the visit's monitor, the CRAs
of its site and sponsors: a move is checked against every constraint and a bad one is refused
naming the constraint, with nothing changed; every accepted action leaves an audit row."""

import datetime
import json
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from sdv.monitoring.models import MonitoringVisit
from sdv.monitoring.plan_import import monitoring_plan_import
from sdv.monitoring.problem import public_holidays
from sdv.monitoring.services import monitoring_plan_schedule
from studies.models import Role
from studies.services import cra_site_assign, membership_grant
from tests.factories import SiteFactory, StudyFactory, UserFactory

pytestmark = pytest.mark.django_db
PLAN = Path(__file__).parent / "data" / "monitoring" / "plan_small.json"
TODAY = datetime.date(2026, 3, 2)
FIELDS = {"id", "site_number", "monitor", "date", "kind", "trip", "travel_km", "status", "reason"}


@pytest.fixture
def world(monkeypatch):
    # "Today" for the services is the plan's first day, so the 2026 plan can be planned and moved.
    monkeypatch.setattr("django.utils.timezone.localdate", lambda *a, **k: TODAY)
    study = StudyFactory(protocol_id="MON-API")
    sites = {n: SiteFactory(study=study, number=n) for n in ("701", "702", "703", "704")}
    sponsor = UserFactory(username="sponsor.m")
    membership_grant(user=sponsor, study=study, role=Role.SPONSOR)
    monitoring_plan_import(study=study, raw=PLAN.read_bytes(), actor=sponsor)
    monitoring_plan_schedule(study=study, actor=sponsor, today=TODAY, time_limit=3)
    users = {"sponsor": sponsor}
    for name, role, site in (("sc701", Role.SITE_COORDINATOR, "701"), ("auditor", Role.AUDITOR, None),
                             ("dm", Role.DATA_MANAGER, None), ("cra.other", Role.CRA, None)):
        users[name] = UserFactory(username=name)
        membership_grant(user=users[name], study=study, role=role, site=sites[site] if site else None)
    cra_site_assign(cra=users["cra.other"], site=sites["704"])
    return study, sites, users


def client(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def visits_of(study, **filters):
    return MonitoringVisit.objects.filter(study=study, **filters).exclude(status="cancelled")


def test_the_list_has_the_issues_fields_and_filters(world):
    study, _sites, users = world
    api = client(users["sponsor"])
    body = api.get(f"/api/v1/monitoring-visits/?study={study.pk}&page_size=100").json()
    assert body["count"] == visits_of(study).count() > 0
    row = body["results"][0]
    assert FIELDS <= set(row) and row["kind"] in ("on_site", "remote")
    visit = MonitoringVisit.objects.get(pk=row["id"])
    assert (row["site_number"], row["monitor"], row["date"], row["status"], row["reason"]) == (
        visit.site.number, visit.monitor.user.username, visit.date.isoformat(), visit.status, visit.reason)
    # A trip's id is shared by its visits, and their legs sum to the trip's travel.
    trips = {}
    for r in body["results"]:
        if r["trip"]:
            trips.setdefault(r["trip"], []).append(r["travel_km"])
    assert trips
    for trip_id, legs in trips.items():
        assert sum(legs) == pytest.approx(MonitoringVisit.objects.get(pk=next(
            r["id"] for r in body["results"] if r["trip"] == trip_id)).trip.travel_km, abs=0.01)
    assert all(r["trip"] is None and r["travel_km"] == 0 for r in body["results"] if r["kind"] == "remote")
    for query, expected in (("site_number=701", visits_of(study, site__number="701")),
                            ("monitor=cra.jan", visits_of(study, monitor__user__username="cra.jan")),
                            ("kind=remote", visits_of(study, kind="remote")),
                            ("status=planned", visits_of(study, status="planned")),
                            ("date_from=2026-03-20&date_to=2026-04-10",
                             visits_of(study, date__gte="2026-03-20", date__lte="2026-04-10"))):
        got = api.get(f"/api/v1/monitoring-visits/?study={study.pk}&{query}&page_size=100").json()
        assert sorted(r["id"] for r in got["results"]) == sorted(expected.values_list("pk", flat=True)), query
    assert api.get(f"/api/v1/monitoring-visits/?study={study.pk}&kind=nope").status_code == 400
    # By site id and by trip.
    site = _sites["702"]
    got = api.get(f"/api/v1/monitoring-visits/?study={study.pk}&site={site.pk}&page_size=100").json()["results"]
    assert sorted(r["id"] for r in got) == sorted(visits_of(study, site=site).values_list("pk", flat=True)) != []
    trip_id = next(iter(trips))
    got = api.get(f"/api/v1/monitoring-visits/?trip={trip_id}&page_size=100").json()["results"]
    assert sorted(r["id"] for r in got) == sorted(visits_of(study, trip_id=trip_id).values_list("pk", flat=True))


def test_site_staff_see_only_their_sites_visits_and_others_nothing(world):
    study, sites, users = world
    own = client(users["sc701"]).get(f"/api/v1/monitoring-visits/?study={study.pk}").json()["results"]
    assert own and {r["site_number"] for r in own} == {"701"}
    other = visits_of(study).exclude(site__number="701").first()
    assert client(users["sc701"]).get(f"/api/v1/monitoring-visits/{other.pk}/").status_code == 404
    assert client(UserFactory(username="stranger")).get("/api/v1/monitoring-visits/").json()["count"] == 0
    # A CRA sees the visits of the sites granted to them, and their own.
    seen = client(users["cra.other"]).get(f"/api/v1/monitoring-visits/?study={study.pk}").json()["results"]
    assert {r["site_number"] for r in seen} == {"704"}


def test_a_reader_may_not_change_a_visit(world):
    study, _sites, users = world
    visit = visits_of(study, site__number="701").first()
    for name in ("auditor", "dm", "sc701"):
        response = client(users[name]).post(f"/api/v1/monitoring-visits/{visit.pk}/confirm/", {}, format="json")
        assert response.status_code == 403, name
    visit.refresh_from_db()
    assert visit.status == "planned" and visit.history.count() == 2  # created, then its trip leg


def test_a_cra_of_the_site_who_is_not_the_visits_monitor_may_confirm_it_others_may_not(world):
    study, _sites, users = world
    visit = visits_of(study, site__number="704").exclude(monitor__user=users["cra.other"]).first()
    elsewhere = visits_of(study, site__number="701").first()
    api = client(users["cra.other"])  # a CRA of the study, granted site 704 only
    assert api.post(f"/api/v1/monitoring-visits/{elsewhere.pk}/confirm/", {}, format="json").status_code == 404
    response = api.post(f"/api/v1/monitoring-visits/{visit.pk}/confirm/", {"reason": "Covering for a colleague"},
                        format="json")
    assert response.status_code == 200 and response.json()["status"] == "confirmed"
    visit.refresh_from_db()
    last = visit.history.first()
    assert (visit.status, last.history_user, last.history_change_reason) == (
        "confirmed", users["cra.other"], "Covering for a colleague")
    elsewhere.refresh_from_db()
    assert elsewhere.status == "planned"


def test_the_monitor_confirms_and_completes_and_a_sponsor_cancels_with_a_reason(world, monkeypatch):
    study, _sites, users = world
    visit = visits_of(study, site__number="701").order_by("date").first()
    anna = visit.monitor.user
    api = client(anna)
    response = api.post(f"/api/v1/monitoring-visits/{visit.pk}/confirm/", {"reason": "Agreed with the PI"},
                        format="json")
    assert response.status_code == 200 and response.json()["status"] == "confirmed"
    visit.refresh_from_db()
    last = visit.history.first()
    assert (visit.status, last.history_user, last.history_change_reason) == ("confirmed", anna, "Agreed with the PI")
    monkeypatch.setattr("django.utils.timezone.localdate", lambda *a, **k: visit.date)  # the day of the visit
    assert api.post(f"/api/v1/monitoring-visits/{visit.pk}/complete/", {}, format="json").json()["status"] == "done"
    assert api.post(f"/api/v1/monitoring-visits/{visit.pk}/cancel/", {"reason": "x"}, format="json").status_code == 400
    later = visits_of(study, site__number="703").order_by("-date").first()
    refused = api.post(f"/api/v1/monitoring-visits/{later.pk}/complete/", {}, format="json")
    assert refused.status_code == 400 and "cannot be done before it happens" in refused.json()["message"]
    sponsor = client(users["sponsor"])
    assert sponsor.post(f"/api/v1/monitoring-visits/{later.pk}/cancel/", {}, format="json").status_code == 400
    response = sponsor.post(f"/api/v1/monitoring-visits/{later.pk}/cancel/", {"reason": "Site closed for audit"},
                            format="json")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    later.refresh_from_db()
    cancelled = later.history.filter(status="cancelled").last()
    assert later.trip is None and later.travel_km == 0
    assert (cancelled.history_user, cancelled.history_change_reason) == (users["sponsor"],
                                                                          "Cancelled: Site closed for audit")


def _move(api, visit, date, **extra):
    return api.post(f"/api/v1/monitoring-visits/{visit.pk}/move/", {"date": date, "reason": "Site asked", **extra},
                    format="json")


@pytest.mark.parametrize(("days", "constraint"), [(5, "weekend"), (35, "holiday"), (-1, "past"),
                                                  (60, "frequency_on_site")])
def test_a_bad_move_is_refused_naming_the_constraint_and_nothing_changes(world, days, constraint):
    study, _sites, users = world
    visit = visits_of(study, site__number="701", kind="on_site").order_by("date").first()
    before = (visit.date, visit.monitor_id, visit.history.count())
    # Saturday after the plan's start; Easter Monday (6 April 2026, Austria); before today; too late.
    target = {5: TODAY + datetime.timedelta(days=5), 35: datetime.date(2026, 4, 6),
              -1: TODAY - datetime.timedelta(days=1), 60: visit.date + datetime.timedelta(days=60)}[days]
    if days == 60:  # 701's second visit, moved more than four weeks after its first
        first, visit = visits_of(study, site__number="701", kind="on_site").order_by("date")[:2]
        before = (visit.date, visit.monitor_id, visit.history.count())
        target = first.date + datetime.timedelta(days=29)
        while target.weekday() >= 5 or target in public_holidays("AT", [2026]) or visits_of(
                study, monitor=visit.monitor, date=target).exists():
            target += datetime.timedelta(days=1)
    response = _move(client(users["sponsor"]), visit, target.isoformat())
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["extra"]["constraint"] == constraint and body["message"].startswith(f"the move breaks {constraint}")
    visit.refresh_from_db()
    assert (visit.date, visit.monitor_id, visit.history.count()) == before


def test_a_move_to_another_monitor_outside_their_countries_is_refused(world):
    study, _sites, users = world
    visit = visits_of(study, site__number="701", kind="on_site").order_by("date").first()
    response = _move(client(users["sponsor"]), visit, visit.date.isoformat(), monitor="cra.jan")
    assert response.status_code == 400 and response.json()["extra"]["constraint"] == "countries"


def test_a_good_move_is_stored_locked_audited_and_its_trips_recomputed(world):
    study, _sites, users = world
    visit = visits_of(study, site__number="701", kind="on_site").order_by("date").first()
    target = visit.date + datetime.timedelta(days=1)
    while target.weekday() >= 5 or visits_of(study, monitor=visit.monitor, date=target).exists():
        target += datetime.timedelta(days=1)
    response = _move(client(users["sponsor"]), visit, target.isoformat())
    assert response.status_code == 200, response.json()
    visit.refresh_from_db()
    assert (visit.date, visit.locked) == (target, True)
    moved = visit.history.filter(history_change_reason__startswith="Moved from").get()
    assert moved.history_user == users["sponsor"] and moved.history_change_reason.endswith("Site asked")
    # Trips follow: the visit's trip and legs are those of its new day.
    assert visit.trip.start_date <= target <= visit.trip.end_date
    legs = visits_of(study, trip=visit.trip).values_list("travel_km", flat=True)
    assert sum(legs) == pytest.approx(visit.trip.travel_km, abs=0.01)
    # Re-planning keeps it where the person put it.
    monitoring_plan_schedule(study=study, actor=users["sponsor"], today=TODAY, time_limit=3)
    visit.refresh_from_db()
    assert visit.date == target and visit.status == "planned"


def test_an_out_of_range_id_is_a_404_and_bad_input_a_400(world):
    study, _sites, users = world
    api = client(users["sponsor"])
    assert api.get("/api/v1/monitoring-visits/99999999999/").status_code == 404
    visit = visits_of(study).first()
    assert api.post(f"/api/v1/monitoring-visits/{visit.pk}/move/", {"date": "soon"}, format="json").status_code == 400
    assert api.post(f"/api/v1/monitoring-visits/{visit.pk}/move/", json.dumps([1]),
                    content_type="application/json").status_code == 400
