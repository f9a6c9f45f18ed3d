"""An independent check of a monitoring plan against every hard constraint: it reads the plan's
visits and the problem's rules and recomputes each constraint directly from the dates (its own
calendar arithmetic and its own holiday look-ups), sharing nothing with the solver's model. The
benchmark counts its breaches, the plan view shows them in red, and a move through the API is
refused when it adds one.

Constraint names (what a refusal says): countries, weekend, holiday, day_off, horizon,
one_on_site_a_day, days_per_week, remote_hours, one_visit_a_day_at_a_site, frequency_on_site,
frequency_contact, kept."""

import datetime
from collections import defaultdict
from dataclasses import asdict, dataclass

import holidays as holidays_lib

from sdv.monitoring.problem import ON_SITE, Problem, Visit


@dataclass(frozen=True)
class Breach:
    constraint: str
    message: str
    site: str | None = None
    monitor: str | None = None
    date: datetime.date | None = None
    past: bool = False  # due before today: nothing planned now can mend it

    def as_dict(self) -> dict:
        out = asdict(self)
        out["date"] = self.date.isoformat() if self.date else None
        return out


def _holidays(country: str, years: list[int]):
    try:
        return holidays_lib.country_holidays(country, years=years)
    except NotImplementedError:
        return {}


def check(problem: Problem, visits: list[Visit], *, previous: list[Visit] | None = None) -> list[Breach]:
    """Every breach of the plan `visits` (cancelled ones left out by the caller). With `previous`,
    also the kept visits (done, confirmed, locked) that are no longer where they were."""
    sites = {s.number: s for s in problem.sites}
    monitors = {m.username: m for m in problem.monitors}
    years = list(range(problem.start.year - 1, problem.end.year + 2))
    calendars = {c: _holidays(c, years) for c in {s.country for s in problem.sites}}
    today = problem.not_before or problem.start
    breaches = []

    def days_of(visit):
        return [visit.date + datetime.timedelta(days=k)
                for k in range(problem.on_site_days if visit.kind == ON_SITE else 1)]

    on_site_days = defaultdict(list)  # monitor -> days on site
    remote_weeks = defaultdict(int)
    site_days = defaultdict(int)
    for v in visits:
        site, monitor = sites.get(v.site), monitors.get(v.monitor)
        # A visit made before today (done, or kept as it happened) cannot be mended by any plan
        # made now: a breach of it is past (shown, never a reason to refuse a plan or a move).
        where = dict(site=v.site, monitor=v.monitor, date=v.date, past=v.date < today)
        if monitor is None:
            breaches.append(Breach("countries", f"{v.monitor} is not a monitor of the plan in force: their "
                                                f"{v.status} visit of site {v.site} on {v.date} needs another "
                                                "monitor or a cancellation", **where))
            continue
        if site is None:
            breaches.append(Breach("countries", f"{v.monitor} at {v.site}: the site is not in the plan", **where))
            continue
        if site.country not in monitor.countries:
            breaches.append(Breach("countries", f"{v.monitor} does not work in {site.country} (site {v.site})",
                                   **where))
        for day in days_of(v):
            if day.weekday() >= 5:
                breaches.append(Breach("weekend", f"{day} is a {day:%A}", **where))
            elif day in calendars[site.country]:
                breaches.append(Breach("holiday", f"{day} is a public holiday in {site.country} "
                                                  f"({calendars[site.country].get(day)})", **where))
            if day.isoformat() in {d.isoformat() for d in monitor.days_off}:
                breaches.append(Breach("day_off", f"{day} is a day off of {v.monitor}", **where))
            if not problem.start <= day < problem.end:
                breaches.append(Breach("horizon", f"{day} is outside the plan's horizon", **where))
            if v.kind == ON_SITE:
                on_site_days[v.monitor].append((day, v.site))
        if v.kind != ON_SITE:
            iso = v.date.isocalendar()
            remote_weeks[(v.monitor, iso[0], iso[1])] += 1
        site_days[(v.site, v.date)] += 1

    for username, days in on_site_days.items():
        seen, per_week = set(), defaultdict(int)
        for day, site in days:
            if day in seen:
                breaches.append(Breach("one_on_site_a_day", f"{username} has two on-site visits on {day}",
                                       site=site, monitor=username, date=day, past=day < today))
            seen.add(day)
            iso = day.isocalendar()
            per_week[(iso[0], iso[1])] += 1
        for (year, week), count in per_week.items():
            if count > monitors[username].days_per_week:
                breaches.append(Breach("days_per_week", f"{username} is on site {count} days in week {year}-W{week:02d}"
                                       f" (at most {monitors[username].days_per_week})", monitor=username,
                                       date=datetime.date.fromisocalendar(year, week, 1),
                                       past=datetime.date.fromisocalendar(year, week, 7) < today))
    for (username, year, week), count in remote_weeks.items():
        used = count * problem.remote_visit_hours
        if used > monitors[username].remote_hours_per_week + 1e-9:
            breaches.append(Breach("remote_hours", f"{username} has {used:g} h of remote visits in week {year}-W"
                                   f"{week:02d} (at most {monitors[username].remote_hours_per_week:g} h)",
                                   monitor=username, date=datetime.date.fromisocalendar(year, week, 1),
                                   past=datetime.date.fromisocalendar(year, week, 7) < today))
    for (site, day), count in site_days.items():
        if count > 1:
            breaches.append(Breach("one_visit_a_day_at_a_site", f"site {site} has {count} visits on {day}",
                                   site=site, date=day, past=day < today))

    for site in problem.sites:
        own = [v for v in visits if v.site == site.number and problem.start <= v.date < problem.end]
        for weeks, kinds, name in ((site.on_site_every, {ON_SITE}, "frequency_on_site"),
                                   (site.remote_every, None, "frequency_contact")):
            if weeks:
                days = sorted({v.date for v in own if kinds is None or v.kind in kinds})
                breaches += _gaps(problem, site, days, weeks, name, today)

    if previous:
        now = {v.id: v for v in visits if v.id is not None}
        for old in previous:
            if old.status in ("done", "confirmed") or old.locked:
                new = now.get(old.id)
                if new is None or (new.date, new.monitor, new.site, new.kind) != (old.date, old.monitor, old.site,
                                                                                  old.kind):
                    breaches.append(Breach("kept", f"the {old.status} visit {old.id} of site {old.site} on "
                                                   f"{old.date} was moved or dropped", site=old.site,
                                           monitor=old.monitor, date=old.date))
    return breaches


def _gaps(problem, site, days, weeks, name, today) -> list[Breach]:
    """"The first visit within the first interval from start, then no gap longer than the interval
    until the end of the horizon", read as dates: the first visit at most interval - 1 days after
    the start (or within the horizon, when it is shorter), each next one at most interval days
    after the one before, and the horizon's end at most interval days after the last."""
    interval = datetime.timedelta(weeks=weeks)
    what = "on-site visit" if name == "frequency_on_site" else "contact (remote or on-site visit)"
    rule = f"{site.tier} risk: every {weeks} weeks"
    out = []
    first_due = min(problem.start + interval, problem.end) - datetime.timedelta(days=1)
    if not days or days[0] > first_due:
        out.append(Breach(name, f"site {site.number} has no {what} by {first_due} ({rule})", site=site.number,
                          date=first_due, past=first_due < today))
    for before, after in zip(days, days[1:], strict=False):
        if after - before > interval:
            due = before + interval
            out.append(Breach(name, f"site {site.number} has no {what} between {before} and {after} ({rule})",
                              site=site.number, date=due, past=due < today))
    if days and problem.end - days[-1] > interval:
        due = days[-1] + interval
        out.append(Breach(name, f"site {site.number} has no {what} after {days[-1]} ({rule})", site=site.number,
                          date=due, past=due < today))
    return out
