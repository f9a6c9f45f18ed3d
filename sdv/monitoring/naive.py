"""The naive plan the solver is measured against: every on-site visit a separate round trip from
the nearest eligible monitor's home (great-circle, as travel.py), as many on-site visits per site
as its frequency needs at least (each placed as late as its interval allows, on the site's working
days), with no grouping into trips and no capacity limit (it is a yardstick, not a plan)."""

import datetime

from sdv.monitoring.problem import Problem, horizon_years, public_holidays
from sdv.monitoring.travel import home


def minimum_visits(problem: Problem, weeks: int, working_days: list[bool]) -> int:
    """Fewest visits meeting "first within the first interval, then no gap longer than it" when
    each is put on the last working day it may take."""
    length, days, count, last = 7 * weeks, problem.days, 0, None
    while True:
        due = min(length, days) - 1 if last is None else last + length
        if last is not None and days - last <= length:
            return count
        day = min(due, days - 1)
        while day > (last if last is not None else -1) and not working_days[day]:
            day -= 1
        if day <= (last if last is not None else -1):
            return count  # no working day left in the interval: the yardstick stops
        count, last = count + 1, day


def naive_plan(problem: Problem) -> dict:
    distances = problem.distances()
    years = horizon_years(problem)
    dates = [problem.start + datetime.timedelta(days=i) for i in range(problem.days)]
    total, visits = 0.0, 0
    for site in problem.sites:
        if not site.on_site_every:
            continue
        eligible = [m for m in problem.monitors if site.country in m.countries]
        if not eligible:
            continue
        nearest = min(distances.km(home(m.username), site.number) for m in eligible)
        off = public_holidays(site.country, years)
        working = [d.weekday() < 5 and d not in off for d in dates]
        count = minimum_visits(problem, site.on_site_every, working)
        visits += count
        total += count * 2 * nearest
    return {"travel_km": total, "on_site_visits": visits}


def round_trips_km(problem: Problem, visits) -> float:
    """The same on-site visits as a plan, each as its own round trip from the nearest eligible home."""
    distances = problem.distances()
    sites = {s.number: s for s in problem.sites}
    total = 0.0
    for visit in visits:
        if visit.kind != "on_site":
            continue
        site = sites[visit.site]
        total += 2 * min(distances.km(home(m.username), site.number) for m in problem.monitors
                         if site.country in m.countries)
    return total
