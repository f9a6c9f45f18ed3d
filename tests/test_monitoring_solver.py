"""The MonitoringOrchestrator's scheduler on small plans: every hard constraint is asserted on the
solver's own output (computed here from the dates, not by asking the checker), re-planning keeps
what it must and moves only what must move, and the independent checker finds each kind of breach
in plans made by hand. In memory: no database."""

import datetime
import io
import json

import pytest
from django.core.management import call_command

from sdv.monitoring import travel
from sdv.monitoring.checker import check
from sdv.monitoring.naive import minimum_visits, naive_plan
from sdv.monitoring.problem import MonitorSpec, Problem, SiteNeed, Visit, public_holidays
from sdv.monitoring.solver import PlanInfeasible, solve

MONDAY = datetime.date(2026, 3, 2)
D = datetime.timedelta


def site(number, country="AT", lat=47.07, lon=15.44, tier="high", on_site=4, remote=None):
    return SiteNeed(number=number, country=country, lat=lat, lon=lon, tier=tier, on_site_every=on_site,
                    remote_every=remote)


def monitor(username, countries=("AT",), lat=48.21, lon=16.37, days=4, hours=8.0, off=()):
    return MonitorSpec(username=username, lat=lat, lon=lon, countries=frozenset(countries), days_per_week=days,
                       remote_hours_per_week=hours, days_off=frozenset(off))


def problem(sites, monitors, weeks=8, start=MONDAY, **kw):
    return Problem(start=start, horizon_weeks=weeks, on_site_days=kw.pop("on_site_days", 1), sites=sites,
                   monitors=monitors, not_before=kw.pop("not_before", start), **kw)


def planned(p, **kw):
    return solve(p, time_limit=kw.pop("time_limit", 3), **kw).visits


def gaps_ok(days, interval_weeks, start, end) -> bool:
    """The frequency rule read from the issue: first visit within the first interval from start,
    then no gap longer than the interval until the end of the horizon."""
    interval = D(weeks=interval_weeks)
    days = sorted(days)
    return (bool(days) and days[0] < min(start + interval, end)
            and all(b - a <= interval for a, b in zip(days, days[1:], strict=False)) and end - days[-1] <= interval)


def test_each_site_gets_its_tiers_frequency_and_an_on_site_visit_counts_as_contact():
    p = problem([site("701", tier="high", on_site=4), site("702", tier="medium", on_site=8, remote=4),
                 site("703", tier="low", on_site=None, remote=8)], [monitor("anna")], weeks=12)
    visits = planned(p)
    by_site = {n: [v for v in visits if v.site == n] for n in ("701", "702", "703")}
    assert gaps_ok([v.date for v in by_site["701"] if v.kind == "on_site"], 4, p.start, p.end)
    assert gaps_ok([v.date for v in by_site["702"] if v.kind == "on_site"], 8, p.start, p.end)
    assert gaps_ok([v.date for v in by_site["702"]], 4, p.start, p.end)  # remote or on-site contacts
    assert gaps_ok([v.date for v in by_site["703"]], 8, p.start, p.end)
    assert {v.kind for v in by_site["703"]} == {"remote"}  # a low site is never visited on site needlessly
    # Fewest visits: 12 weeks need 3 on-site visits every 4 weeks, and no more.
    assert len(by_site["701"]) == 3 == minimum_visits(p, 4, [True] * p.days)


def test_an_on_site_visit_is_the_contact_a_remote_visit_is_for():
    # On site every 4 weeks and a contact every 4 weeks: the on-site visits are the contacts, so
    # the solver adds no remote visit, and the checker accepts a plan of on-site visits only.
    p = problem([site("701", tier="medium", on_site=4, remote=4)], [monitor("anna")], weeks=8)
    visits = planned(p)
    assert {v.kind for v in visits} == {"on_site"} and len(visits) == 2
    by_hand = [Visit("701", "anna", MONDAY + D(weeks=w), "on_site") for w in (3, 7)]
    assert check(p, by_hand) == []
    # Remote visits alone are contacts but not on-site visits.
    remote = [Visit(v.site, v.monitor, v.date, "remote") for v in by_hand]
    assert {b.constraint for b in check(p, remote)} == {"frequency_on_site"}


def test_a_monitor_visits_only_sites_in_their_countries():
    p = problem([site("701", "AT"), site("801", "CZ", lat=49.2, lon=16.61)],
                [monitor("anna", ("AT",)), monitor("jan", ("CZ",), lat=50.08, lon=14.44)])
    visits = planned(p)
    assert {v.monitor for v in visits if v.site == "701"} == {"anna"}
    assert {v.monitor for v in visits if v.site == "801"} == {"jan"}


def test_a_site_no_monitor_may_visit_is_refused_naming_the_constraint():
    p = problem([site("701", "AT"), site("901", "HU", lat=47.5, lon=19.04)], [monitor("anna", ("AT",))])
    with pytest.raises(PlanInfeasible, match=r"countries: .*901 \(HU\)"):
        solve(p, time_limit=1)


def test_one_on_site_visit_a_day_per_monitor_and_days_per_week_and_no_weekends():
    # Six sites due within the first week of a two-week plan (on site every week) for one monitor who
    # works three on-site days a week: impossible; with two monitors of three days each, just possible.
    sites = [site(f"70{i}", lat=47.0 + i / 10, on_site=1) for i in range(6)]
    with pytest.raises(PlanInfeasible):
        solve(problem(sites, [monitor("anna", days=3)], weeks=2), time_limit=2)
    p = problem(sites, [monitor("anna", days=3), monitor("ben", days=3, lat=47.1, lon=15.4)], weeks=2)
    visits = planned(p)
    for username in ("anna", "ben"):
        days = [v.date for v in visits if v.monitor == username and v.kind == "on_site"]
        assert len(days) == len(set(days))  # at most one on-site visit a day
        for week in {d.isocalendar()[:2] for d in days}:
            assert sum(d.isocalendar()[:2] == week for d in days) <= 3
    assert all(v.date.weekday() < 5 for v in visits)
    assert len(visits) == 12


def test_no_visit_on_a_public_holiday_of_the_sites_country():
    # Easter week 2026 in Austria: Monday 6 April is a holiday. Five sites to visit that week, one
    # per day, from a monitor who may work five days: only four days are open, so two monitors.
    start = datetime.date(2026, 4, 6)
    assert start in public_holidays("AT", [2026])
    sites = [site(f"70{i}", lat=47.0 + i / 10, on_site=1) for i in range(4)]
    p = problem(sites, [monitor("anna", days=5)], weeks=1, start=start)
    visits = planned(p)
    assert len(visits) == 4 and start not in {v.date for v in visits}
    with pytest.raises(PlanInfeasible):  # a fifth site does not fit in the four open days
        solve(problem([*sites, site("709", lat=47.9, on_site=1)], [monitor("anna", days=5)], weeks=1,
                      start=start), time_limit=2)


def test_no_visit_on_a_monitors_day_off():
    off = [MONDAY + D(days=k) for k in (0, 1, 2, 3)]  # only Friday of the first week is left
    p = problem([site("701", on_site=1)], [monitor("anna", off=off)], weeks=1)
    assert [v.date for v in planned(p)] == [MONDAY + D(days=4)]


def test_multi_day_visits_take_consecutive_working_days_of_one_week():
    p = problem([site("701"), site("702", lat=48.3, lon=14.29)], [monitor("anna", days=4)], weeks=4, on_site_days=2)
    visits = [v for v in planned(p) if v.kind == "on_site"]
    assert len(visits) == 2
    occupied = [v.date + D(days=k) for v in visits for k in range(2)]
    assert len(set(occupied)) == 4 and all(d.weekday() < 5 for d in occupied)
    assert all((v.date + D(days=1)).isocalendar()[:2] == v.date.isocalendar()[:2] for v in visits)


def test_remote_visits_stay_within_the_weekly_remote_hours():
    # Four low-risk sites, a remote contact every week; 4 h a week at 2 h a visit: two a week each.
    sites = [site(f"70{i}", tier="low", on_site=None, remote=1, lat=47 + i / 10) for i in range(4)]
    p = problem(sites, [monitor("anna", hours=4), monitor("ben", hours=4)], weeks=2, remote_visit_hours=2)
    visits = planned(p)
    assert len(visits) == 8 and {v.kind for v in visits} == {"remote"}
    for username in ("anna", "ben"):
        for week in {v.date.isocalendar()[:2] for v in visits}:
            assert sum(v.monitor == username and v.date.isocalendar()[:2] == week for v in visits) <= 2


def test_trips_group_consecutive_days_and_their_legs_sum_to_the_travel():
    # Two sites next to each other far from home: one trip over two days beats two round trips.
    far = [site("701", lat=47.07, lon=15.44, on_site=8), site("702", lat=47.10, lon=15.50, on_site=8)]
    p = problem(far, [monitor("anna")], weeks=8)
    visits = planned(p)
    trips = travel.trips(visits, days=1, distances=p.distances())
    assert len(trips) == 1 and (trips[0].end - trips[0].start).days == 1
    assert sum(trips[0].legs) == pytest.approx(trips[0].travel_km)
    d = p.distances()
    assert trips[0].travel_km == pytest.approx(d.km("home:anna", trips[0].visits[0].site) + d.km("701", "702")
                                               + d.km(trips[0].visits[1].site, "home:anna"))
    assert trips[0].travel_km < naive_plan(p)["travel_km"]


def test_haversine_is_the_great_circle_distance():
    # Vienna - Graz, and a quarter of the equator (2 pi R / 4).
    assert travel.haversine_km(48.21, 16.37, 47.07, 15.44) == pytest.approx(144.6, abs=0.5)
    assert travel.haversine_km(0, 0, 0, 90) == pytest.approx(travel.EARTH_RADIUS_KM * 3.141592653589793 / 2)


def test_a_road_distance_matrix_replaces_the_great_circle_where_it_has_the_pair():
    d = travel.Distances(points={"a": (48.21, 16.37), "b": (47.07, 15.44)}, road_km={"b": {"a": 191.0}})
    assert d.km("a", "b") == 191.0


def test_replanning_keeps_done_confirmed_and_locked_visits_and_moves_only_what_must_move():
    p = problem([site("701"), site("702", lat=48.3, lon=14.29), site("703", tier="low", on_site=None, remote=4)],
                [monitor("anna")], weeks=8)
    first = planned(p)
    for i, v in enumerate(first):
        v.id = i + 1
    # Unchanged inputs: the same plan, visit for visit.
    again = planned(Problem(**{**p.__dict__, "visits": [Visit(**v.__dict__) for v in first]}))
    assert sorted((v.id, v.date) for v in again) == sorted((v.id, v.date) for v in first)
    # The monitor takes a day off on one planned visit's day: that visit moves, no other.
    target = next(v for v in first if v.kind == "on_site")
    confirmed = next(v for v in first if v.kind == "on_site" and v is not target)
    confirmed.status = "confirmed"
    changed = Problem(**{**p.__dict__, "monitors": [monitor("anna", off=[target.date])],
                         "visits": [Visit(**v.__dict__) for v in first]})
    result = planned(changed)
    moved = {v.id for v in result if v.id is not None}
    assert target.id not in moved
    assert moved == {v.id for v in first} - {target.id}
    assert {(v.id, v.date) for v in result if v.id is not None} == {(v.id, v.date) for v in first if v is not target}
    assert target.date not in {v.date for v in result if v.site == target.site}
    assert check(changed, result, previous=changed.visits) == []


def test_a_confirmed_visit_on_a_day_that_is_now_a_day_off_is_kept_all_the_same():
    p = problem([site("701")], [monitor("anna")], weeks=4)
    [visit] = planned(p)
    visit.id, visit.status = 1, "confirmed"
    result = planned(Problem(**{**p.__dict__, "monitors": [monitor("anna", off=[visit.date])], "visits": [visit]}))
    assert [(v.id, v.date, v.status) for v in result] == [(1, visit.date, "confirmed")]


def test_no_new_visit_is_planned_before_today():
    today = MONDAY + D(days=9)
    p = problem([site("701")], [monitor("anna")], weeks=8, not_before=today)
    assert all(v.date >= today for v in planned(p))


def test_the_checker_finds_each_kind_of_breach_in_a_plan_made_by_hand():
    p = problem([site("701", on_site=2), site("801", "CZ", lat=49.2, lon=16.61, on_site=None, remote=2)],
                [monitor("anna", ("AT",), days=1, hours=2, off=[MONDAY + D(days=2)])], weeks=4)
    easter = datetime.date(2026, 4, 6)
    visits = [Visit("701", "anna", MONDAY + D(days=5), "on_site"),  # a Saturday
              Visit("701", "anna", MONDAY + D(days=2), "on_site"),  # the monitor's day off
              Visit("701", "anna", MONDAY + D(days=3), "on_site"),  # a second on-site day that week
              Visit("801", "anna", MONDAY + D(days=3), "remote"),  # anna does not work in CZ
              Visit("801", "anna", MONDAY + D(days=4), "remote"),  # 4 h of remote visits in a week of 2
              Visit("701", "anna", easter, "on_site")]  # outside the horizon, and a holiday in AT
    found = {b.constraint for b in check(p, visits)}
    assert found >= {"weekend", "day_off", "days_per_week", "countries", "remote_hours", "holiday", "horizon",
                     "frequency_on_site", "frequency_contact"}
    twice = [Visit("701", "anna", MONDAY, "on_site"), Visit("701", "anna", MONDAY, "remote")]
    assert {"one_on_site_a_day", "one_visit_a_day_at_a_site"} <= {
        b.constraint for b in check(p, [*twice, Visit("701", "anna", MONDAY, "on_site")])}
    kept = Visit("701", "anna", MONDAY, "on_site", status="done", id=9)
    assert "kept" in {b.constraint for b in check(p, [], previous=[kept])}


def test_bench_monitoring_reports_breaches_travel_and_time_as_one_json_line_last():
    out = io.StringIO()
    call_command("bench_monitoring", "--skip-large", "--small-time-limit", "3", stdout=out)
    last = json.loads(out.getvalue().strip().splitlines()[-1])
    small = last["small"]
    assert (small["sites"], small["monitors"], small["weeks"]) == (30, 5, 12) and "large" not in last
    assert small["breaches"] == 0 and small["breaches_by_constraint"] == {}
    # The naive plan is measured in the same run, and the solver's plan travels less.
    assert 0 < small["travel_km"] < small["naive_km"] and small["travel_ratio"] == round(
        small["travel_km"] / small["naive_km"], 3)
    assert 0 < small["seconds"] < 3 + 10 and small["status"] in ("OPTIMAL", "FEASIBLE")


def test_breaches_of_visits_made_before_today_are_past_and_do_not_stop_a_new_plan():
    # Done before today: on a Saturday, and by a monitor no longer in the plan. Nothing planned now
    # can mend them: the checker reports them as past, and the solver plans the rest.
    today = MONDAY + D(days=14)
    p = problem([site("701")], [monitor("anna")], weeks=8, not_before=today)
    p.visits = [Visit("701", "anna", MONDAY + D(days=5), "on_site", status="done", id=1),
                Visit("701", "ben", MONDAY + D(days=8), "on_site", status="done", id=2)]
    visits = planned(p)
    found = check(p, visits, previous=p.visits)
    assert {(b.constraint, b.past) for b in found} == {("weekend", True), ("countries", True)}
    assert {v.id for v in visits} >= {1, 2} and all(v.date >= today for v in visits if v.id is None)
