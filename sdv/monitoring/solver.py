"""The MonitoringOrchestrator's scheduler: OR-Tools CP-SAT (see _ComponentModel for the model).

Decisions: `x[m, s, d]` monitor m starts an on-site visit at site s on day d (it then occupies
`on_site_days` calendar days of one ISO week), `r[m, s, d]` a remote visit. Only eligible triples
exist: s in one of m's countries, every day of the visit a weekday that is neither a public holiday
of the site's country (the `holidays` package) nor a day off of the monitor, and not before today.
Hard constraints, all on those decisions:

- frequency: every window of the horizon given by `problem.frequency_windows` holds an on-site
  visit (the tier's `on_site_every_weeks`), and one holding a contact, remote or on-site (the tier's
  `remote_every_weeks`: an on-site visit counts as the contact a remote visit is for);
- at most one on-site visit a day per monitor; at most `days_per_week` on-site days per ISO week;
  remote visits within the monitor's weekly remote hours; at most one visit a day per site;
- visits done or confirmed, moved by a person, or in the past are fixed: constants of the model.

Objective: least travel (0.1 km units), where a trip is a run of consecutive on-site days (so it
lies within an ISO week): per monitor and week, a circuit home -> the week's sites -> home
(AddCircuit), whose arcs cost their great-circle km. Re-planning: each planned visit not kept where
it was costs more than any travel it could save, so only what must move moves.

The eligibility graph (monitor - site, by country) falls into independent components, each solved
as its own model with a share of the time limit, on `workers` search workers.
"""

import datetime
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass

from ortools.sat.python import cp_model

from sdv.monitoring.problem import (
    ON_SITE,
    REMOTE,
    Problem,
    Visit,
    frequency_windows,
    horizon_years,
    public_holidays,
)
from sdv.monitoring.travel import home, plan_travel_km

UNITS_PER_KM = 10
PARTNERS = 6
NEAREST_MONITORS = 1
# Models with more on-site decisions than this start from a greedy first plan (see _warm_start);
# smaller ones find better plans from CP-SAT's own first solutions.
WARM_START_FROM = 3000


class PlanInfeasible(Exception):
    """No plan meets every hard constraint (or none was found in the time limit); says why."""

    def __init__(self, message: str, problems: list[str] | None = None, *, proved: bool = True):
        super().__init__(message)
        self.problems = problems or []
        self.proved = proved  # False: the time limit ran out before any plan was found


@dataclass
class SolveResult:
    visits: list[Visit]
    status: str
    seconds: float
    components: int
    moved: int
    dropped: int


def components(problem: Problem) -> list[tuple[list, list]]:
    """(monitors, sites) groups that share no monitor: each is scheduled on its own."""
    parent = {}

    def find(key):
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for monitor in problem.monitors:
        find(("m", monitor.username))
        for site in problem.sites:
            if site.country in monitor.countries:
                parent[find(("s", site.number))] = find(("m", monitor.username))
    groups = defaultdict(lambda: ([], []))
    for monitor in problem.monitors:
        groups[find(("m", monitor.username))][0].append(monitor)
    for site in problem.sites:
        groups[find(("s", site.number))][1].append(site)
    return [group for group in groups.values() if group[0] and group[1]]


def solve(problem: Problem, *, time_limit: float = 10.0, workers: int = 2, seed: int = 0) -> SolveResult:
    started = time.perf_counter()
    orphans = [s for s in problem.sites if (s.on_site_every or s.remote_every)
               and not any(s.country in m.countries for m in problem.monitors)]
    if orphans:
        raise PlanInfeasible("countries: no monitor may work in the country of site(s) "
                             + ", ".join(f"{s.number} ({s.country})" for s in orphans),
                             [f"site {s.number}: no monitor works in {s.country}" for s in orphans])
    groups = components(problem)
    sizes = [max(1, len(ms)) * max(1, len(ss)) for ms, ss in groups]
    kept = [v for v in problem.visits if problem.fixed(v)]
    out, statuses, moved, dropped = list(kept), [], 0, 0
    for (monitors, sites), size in zip(groups, sizes, strict=True):
        # Each component gets its share of the solving time (building the models comes on top).
        budget = max(0.5, time_limit * size / sum(sizes))
        model = _ComponentModel(problem, monitors, sites)
        visits, status, n_moved, n_dropped = model.solve(time_limit=budget, workers=workers, seed=seed)
        out += visits
        statuses.append(status)
        moved, dropped = moved + n_moved, dropped + n_dropped
    status = "OPTIMAL" if statuses and all(s == "OPTIMAL" for s in statuses) else "FEASIBLE"
    out.sort(key=lambda v: (v.date, v.monitor, v.site, v.kind))
    return SolveResult(visits=out, status=status, seconds=time.perf_counter() - started, components=len(groups),
                       moved=moved, dropped=dropped)


class _ComponentModel:
    """Two stages; the hard constraints hold exactly in both.

    Stage A (CP-SAT): `x[m, s, d]` an on-site visit of monitor m at site s starting day d, `r[m, s,
    d]` a remote one, with every hard constraint on them. Travel is counted per monitor and ISO
    week, where a trip lives (a weekend ends it): `w[m, s, k]` = m is on site at s in week k, and an
    AddCircuit over home and the week's sites (arcs to each site's nearest neighbours) costs the trip
    home -> the week's sites -> home. Stage B puts each monitor-week's on-site visits in the order of
    the least travel: every assignment of its sites to the week's free working days is enumerated
    (five days at most), keeping only those that keep every frequency window filled, and the
    days of visits already planned preferred."""

    def __init__(self, problem: Problem, monitors, sites):
        self.p, self.monitors, self.sites = problem, monitors, sites
        self.days, self.n = problem.days, problem.on_site_days
        self.first_free = problem.first_free_day()
        self.dates = [problem.start + datetime.timedelta(days=i) for i in range(self.days)]
        years = horizon_years(problem)
        off = {c: set(public_holidays(c, years)) for c in {s.country for s in sites}}
        self.site_ok = {s.number: [d.weekday() < 5 and d not in off[s.country] for d in self.dates] for s in sites}
        self.mon_ok = {m.username: [d.weekday() < 5 and d not in m.days_off for d in self.dates] for m in monitors}
        self.week_of = [d.isocalendar()[:2] for d in self.dates]
        self.blocks = defaultdict(list)  # ISO week -> its weekday indices in the horizon
        for i, day in enumerate(self.dates):
            if day.weekday() < 5:
                self.blocks[self.week_of[i]].append(i)
        self.dist = problem.distances()
        self.by_name = {s.number: s for s in sites}
        self.restrict = True

    def _index(self, day: datetime.date) -> int | None:
        i = (day - self.p.start).days
        return i if 0 <= i < self.days else None

    def _units(self, a: str, b: str) -> int:
        return round(self.dist.km(a, b) * UNITS_PER_KM)

    def solve(self, *, time_limit: float, workers: int, seed: int):
        p = self.p
        names = {s.number for s in self.sites}
        usernames = {m.username for m in self.monitors}
        mine = [v for v in p.visits if v.site in names and v.monitor in usernames]
        self.fixed = [v for v in mine if p.fixed(v) and self._index(v.date) is not None]
        self.movable = [v for v in mine if not p.fixed(v) and self._index(v.date) is not None]
        self.taken = defaultdict(set)  # monitor -> day indices already on site (fixed visits)
        self.site_taken = defaultdict(set)  # site -> day indices with a fixed visit
        for v in self.fixed:
            i = self._index(v.date)
            self.site_taken[v.site].add(i)
            if v.kind == ON_SITE:
                self.taken[v.monitor].update(range(i, min(self.days, i + self.n)))
        try:
            chosen, status = self._stage_a(time_limit=time_limit, workers=workers, seed=seed)
        except PlanInfeasible as exc:
            if not exc.proved:
                raise
            self.restrict = False  # the nearest monitors cannot do it: every eligible one, then
            chosen, status = self._stage_a(time_limit=time_limit, workers=workers, seed=seed)
        placed = self._stage_b(chosen)
        by_key = {(v.site, v.monitor, v.date, v.kind): v for v in self.movable}
        result = []
        for visit in placed:
            old = by_key.pop((visit.site, visit.monitor, visit.date, visit.kind), None)
            result.append(old if old is not None else visit)
        return result, status, len(by_key), 0

    # --- stage A ---------------------------------------------------------------------------------
    def _nearest_monitors(self) -> dict[str, set]:
        """The NEAREST_MONITORS eligible monitors nearest each site, and those with a visit there
        already: the model grows with the monitors a site may have, and a farther one rarely saves
        travel. When they cannot meet every constraint, the model is solved with all of them."""
        out = {}
        for s in self.sites:
            eligible = sorted((m for m in self.monitors if s.country in m.countries),
                              key=lambda m, s=s: self.dist.km(home(m.username), s.number))
            out[s.number] = {m.username for m in eligible[:NEAREST_MONITORS]}
        for v in self.movable + self.fixed:
            out.setdefault(v.site, set()).add(v.monitor)
        return out

    def _on_site_starts(self, m, s) -> list[int]:
        ok_s, ok_m, taken = self.site_ok[s.number], self.mon_ok[m.username], self.taken[m.username]
        out = []
        for d in range(self.first_free, self.days - self.n + 1):
            span = range(d, d + self.n)
            if all(ok_s[k] and ok_m[k] and k not in taken and self.week_of[k] == self.week_of[d] for k in span) \
                    and d not in self.site_taken[s.number]:
                out.append(d)
        return out

    def _remote_days(self, m, s) -> list[int]:
        ok_s, ok_m = self.site_ok[s.number], self.mon_ok[m.username]
        return [d for d in range(self.first_free, self.days) if ok_s[d] and ok_m[d]
                and d not in self.site_taken[s.number]]

    def _stage_a(self, *, time_limit: float, workers: int, seed: int):
        p, n = self.p, self.n
        model = cp_model.CpModel()
        x, r = {}, {}
        nearest = self._nearest_monitors()
        for m in self.monitors:
            remote_ok = m.remote_hours_per_week >= p.remote_visit_hours > 0
            for s in self.sites:
                if s.country not in m.countries:
                    continue
                # Remote visits cost no travel: any eligible monitor may take them.
                if s.on_site_every and not (self.restrict and m.username not in nearest[s.number]):
                    for d in self._on_site_starts(m, s):
                        x[(m.username, s.number, d)] = model.NewBoolVar("")
                if s.remote_every and remote_ok:
                    for d in self._remote_days(m, s):
                        r[(m.username, s.number, d)] = model.NewBoolVar("")
        fixed_week_days, fixed_remote = defaultdict(int), defaultdict(int)
        for v in self.fixed:
            i = self._index(v.date)
            if v.kind == ON_SITE:
                for k in range(i, min(self.days, i + n)):
                    fixed_week_days[(v.monitor, self.week_of[k])] += 1
            else:
                fixed_remote[(v.monitor, self.week_of[i])] += 1

        by_monitor_day, by_site_day = defaultdict(list), defaultdict(list)
        week_terms, remote_week = defaultdict(list), defaultdict(list)
        site_week = defaultdict(list)  # (monitor, site, week) -> x vars
        for (mu, sn, d), var in x.items():
            by_site_day[(sn, d)].append(var)
            site_week[(mu, sn, self.week_of[d])].append(var)
            week_terms[(mu, self.week_of[d])].append(var)
            for k in range(n):
                by_monitor_day[(mu, d + k)].append(var)
        for (mu, sn, d), var in r.items():
            by_site_day[(sn, d)].append(var)
            remote_week[(mu, self.week_of[d])].append(var)
        for terms in list(by_monitor_day.values()) + list(by_site_day.values()):
            if len(terms) > 1:
                model.AddAtMostOne(terms)  # one on-site visit a day per monitor; one visit a day per site
        capacity = {m.username: m.days_per_week for m in self.monitors}
        for (mu, week), terms in week_terms.items():
            model.Add(n * sum(terms) <= max(0, capacity[mu] - fixed_week_days[(mu, week)]))
        hours = {m.username: m.remote_hours_per_week for m in self.monitors}
        for (mu, week), terms in remote_week.items():
            allowed = int((hours[mu] + 1e-9) // p.remote_visit_hours) - fixed_remote[(mu, week)]
            model.Add(sum(terms) <= max(0, allowed))
        w = {}
        for key, terms in site_week.items():
            if len(terms) == 1:
                w[key] = terms[0]
            else:
                w[key] = model.NewBoolVar("")
                model.Add(sum(terms) == w[key])  # at most one on-site visit of a site a week
        self._frequency(model, x, r)
        objective = self._circuits(model, w)
        objective += [(1, var) for var in r.values()]  # no superfluous remote visit
        # Re-planning: a planned visit not kept where it was costs more than any travel it saves.
        penalty = 4 * 2 * UNITS_PER_KM * max([self.dist.km(home(m.username), s.number)
                                              for m in self.monitors for s in self.sites] or [1]) + 100
        for v in self.movable:
            var = (x if v.kind == ON_SITE else r).get((v.monitor, v.site, self._index(v.date)))
            if var is not None:
                model.AddHint(var, 1)
                objective.append((-penalty, var))
        if not self.movable and len(x) > WARM_START_FROM:
            self._warm_start(model, x, r)
        model.Minimize(sum(coef * var for coef, var in objective))
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = time_limit
        solver.parameters.num_search_workers = workers
        solver.parameters.random_seed = seed
        status = solver.Solve(model)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            why = "proved infeasible" if status == cp_model.INFEASIBLE else f"none found in {time_limit:.1f} s"
            raise PlanInfeasible(f"no plan meets every constraint for sites {', '.join(sorted(self.by_name))} "
                                 f"({why})", self._diagnose(), proved=status == cp_model.INFEASIBLE)
        chosen = [Visit(site=sn, monitor=mu, date=self.dates[d], kind=ON_SITE)
                  for (mu, sn, d), var in x.items() if solver.BooleanValue(var)]
        chosen += [Visit(site=sn, monitor=mu, date=self.dates[d], kind=REMOTE)
                   for (mu, sn, d), var in r.items() if solver.BooleanValue(var)]
        return chosen, ("OPTIMAL" if status == cp_model.OPTIMAL else "FEASIBLE")

    def _warm_start(self, model, x, r) -> None:
        """A first plan for the search to start from (CP-SAT's solution hint; the solver is free to
        leave it): each window that has no visit yet gets one on the latest day it can take, by the
        site's nearest monitor while their day and week allow. Without it, large models spend their
        time limit finding a first plan full of visits nobody needs."""
        by_site = defaultdict(lambda: defaultdict(list))
        for (mu, sn, d) in x:
            by_site[sn][d].append(mu)
        remote_by_site = defaultdict(lambda: defaultdict(list))
        for (mu, sn, d) in r:
            remote_by_site[sn][d].append(mu)
        home_km = {(m.username, s.number): self.dist.km(home(m.username), s.number)
                   for m in self.monitors for s in self.sites}
        capacity = {m.username: m.days_per_week for m in self.monitors}
        remote_cap = {m.username: int((m.remote_hours_per_week + 1e-9) // self.p.remote_visit_hours)
                      if self.p.remote_visit_hours > 0 else 0 for m in self.monitors}
        busy, week_load, remote_load = defaultdict(set), defaultdict(int), defaultdict(int)
        site_busy = defaultdict(set)
        hint_x, hint_r = set(), set()
        for s in sorted(self.sites, key=lambda s: (s.on_site_every or 99, s.number)):
            contacts = set()
            for _weeks, windows, kinds in self._windows(s):
                fixed_days = {self._index(v.date) for v in self.fixed if v.site == s.number and v.kind in kinds}
                have = fixed_days | (contacts if kinds != {ON_SITE} else set())
                for a, b in windows:
                    if any(a <= d < b for d in have):
                        continue
                    pick = None
                    pool = by_site[s.number] if kinds == {ON_SITE} else {**remote_by_site[s.number]}
                    for d in range(b - 1, a - 1, -1):
                        if d in site_busy[s.number]:
                            continue
                        for mu in sorted(pool.get(d, []), key=lambda mu, s=s: home_km[(mu, s.number)]):
                            week = self.week_of[d]
                            if kinds == {ON_SITE}:
                                if d in busy[mu] or week_load[(mu, week)] + self.n > capacity[mu]:
                                    continue
                            elif remote_load[(mu, week)] >= remote_cap[mu]:
                                continue
                            pick = (mu, d)
                            break
                        if pick:
                            break
                    if pick is None:
                        continue
                    mu, d = pick
                    site_busy[s.number].add(d)
                    have.add(d)
                    contacts.add(d)
                    if kinds == {ON_SITE}:
                        hint_x.add((mu, s.number, d))
                        busy[mu].update(range(d, d + self.n))
                        week_load[(mu, self.week_of[d])] += self.n
                    else:
                        hint_r.add((mu, s.number, d))
                        remote_load[(mu, self.week_of[d])] += 1
        for key, var in x.items():
            model.AddHint(var, key in hint_x)
        for key, var in r.items():
            model.AddHint(var, key in hint_r)

    def _windows(self, s) -> list[tuple[int, list[tuple[int, int]], set]]:
        """(interval weeks, windows, kinds counted) of each frequency rule of the site."""
        out = []
        for weeks, kinds in ((s.on_site_every, {ON_SITE}), (s.remote_every, {ON_SITE, REMOTE})):
            if weeks:
                days = sorted(self._index(v.date) for v in self.fixed if v.site == s.number and v.kind in kinds)
                out.append((weeks, frequency_windows(7 * weeks, self.days, self.first_free, days), kinds))
        return out

    def _frequency(self, model, x, r):
        at = {ON_SITE: defaultdict(list), REMOTE: defaultdict(list)}
        for (_mu, sn, d), var in x.items():
            at[ON_SITE][(sn, d)].append(var)
        for (_mu, sn, d), var in r.items():
            at[REMOTE][(sn, d)].append(var)
        for s in self.sites:
            for weeks, windows, kinds in self._windows(s):
                fixed_days = {self._index(v.date) for v in self.fixed if v.site == s.number and v.kind in kinds}
                for a, b in windows:
                    if any(a <= d < b for d in fixed_days):
                        continue
                    terms = [var for d in range(a, b) for kind in kinds for var in at[kind][(s.number, d)]]
                    if not terms:
                        what = "on-site visit" if kinds == {ON_SITE} else "contact (remote or on-site)"
                        raise PlanInfeasible(
                            f"frequency: site {s.number} needs an {what} between {self.dates[a]} and "
                            f"{self.dates[b - 1]} ({s.tier} risk: every {weeks} weeks), but no monitor can be "
                            "there on any of those days",
                            [f"site {s.number}: no eligible day in {self.dates[a]}..{self.dates[b - 1]}"])
                    model.AddBoolOr(terms)

    def _circuits(self, model, w) -> list:
        """Per monitor and week, the trip home -> the week's sites -> home as a circuit."""
        objective = []
        nodes = defaultdict(list)
        for (mu, sn, week), var in w.items():
            nodes[(mu, week)].append((sn, var))
        for (mu, _week), members in nodes.items():
            here = home(mu)
            if len(members) == 1:
                (sn, var), = members
                objective.append((2 * self._units(here, sn), var))
                continue
            stay_home = model.NewBoolVar("")
            arcs = [(0, 0, stay_home)]
            model.AddBoolOr([stay_home, *[var for _sn, var in members]])
            names = [sn for sn, _var in members]
            for i, (sn, var) in enumerate(members, start=1):
                model.AddImplication(var, stay_home.Not())
                arcs.append((i, i, var.Not()))
                for a, b in ((0, i), (i, 0)):
                    lit = model.NewBoolVar("")
                    arcs.append((a, b, lit))
                    objective.append((self._units(here, sn), lit))
                near = sorted((t for t in names if t != sn), key=lambda t, sn=sn: self.dist.km(sn, t))[:PARTNERS]
                for t in near:
                    lit = model.NewBoolVar("")
                    arcs.append((i, names.index(t) + 1, lit))
                    objective.append((self._units(sn, t), lit))
            model.AddCircuit(arcs)
        return objective

    # --- stage B ---------------------------------------------------------------------------------
    def _stage_b(self, chosen: list[Visit]) -> list[Visit]:
        """Reorder each monitor-week's on-site visits over its days for the least travel, keeping
        every frequency window filled (stage A's own days are one such order)."""
        remote = [v for v in chosen if v.kind == REMOTE]
        on_site = [v for v in chosen if v.kind == ON_SITE]
        contact_days = defaultdict(list)  # site -> days of every visit (fixed, remote, on-site)
        on_site_days = defaultdict(list)
        for v in self.fixed + chosen:
            i = self._index(v.date)
            contact_days[v.site].append(i)
            if v.kind == ON_SITE:
                on_site_days[v.site].append(i)
        planned = {(v.monitor, v.site, self.week_of[self._index(v.date)]): self._index(v.date)
                   for v in self.movable if v.kind == ON_SITE}
        weeks = defaultdict(list)
        for v in on_site:
            weeks[(v.monitor, self.week_of[self._index(v.date)])].append(v)
        monitors = {m.username: m for m in self.monitors}
        placed = list(remote)
        for (mu, week), visits in sorted(weeks.items()):
            days = self._best_days(monitors[mu], week, visits, planned, on_site_days, contact_days)
            for visit in visits:
                old, new = self._index(visit.date), days[visit.site]
                for lists in (on_site_days[visit.site], contact_days[visit.site]):
                    lists.remove(old)
                    lists.append(new)
                placed.append(Visit(site=visit.site, monitor=mu, date=self.dates[new], kind=ON_SITE))
        return placed

    def _keeps_windows(self, site: str, old: int, new: int, on_site_days, contact_days) -> bool:
        if old == new:
            return True
        for _weeks, windows, kinds in self._windows(self.by_name[site]):
            days = on_site_days[site] if kinds == {ON_SITE} else contact_days[site]
            moved = [new if d == old else d for d in days]
            for a, b in windows:
                if any(a <= d < b for d in days) and not any(a <= d < b for d in moved):
                    return False
        return True

    def _best_days(self, m, week, visits, planned, on_site_days, contact_days) -> dict[str, int]:
        others = {self._index(v.date) for v in visits}
        fixed_here = [v for v in self.fixed if v.monitor == m.username and v.kind == ON_SITE
                      and self.week_of[self._index(v.date)] == week]
        options = {}
        for v in visits:
            s, old = self.by_name[v.site], self._index(v.date)
            starts = [d for d in self._on_site_starts(m, s) if self.week_of[d] == week]
            site_busy = set(contact_days[v.site]) - {old}
            options[v.site] = [d for d in starts if d not in site_busy
                               and self._keeps_windows(v.site, old, d, on_site_days, contact_days)]
        order = [v.site for v in visits]
        best, best_cost = {v.site: self._index(v.date) for v in visits}, None
        if len(order) > 5 or not others:
            return best
        for days in itertools.product(*(options[sn] for sn in order)):
            occupied = [k for d in days for k in range(d, d + self.n)]
            if len(set(occupied)) != len(occupied):
                continue
            trial = [Visit(site=sn, monitor=m.username, date=self.dates[d], kind=ON_SITE)
                     for sn, d in zip(order, days, strict=True)] + fixed_here
            cost = plan_travel_km(trial, days=self.n, distances=self.dist)
            cost += sum(1000.0 for sn, d in zip(order, days, strict=True)
                        if planned.get((m.username, sn, week), d) != d)
            if best_cost is None or cost < best_cost - 1e-9:
                best, best_cost = dict(zip(order, days, strict=True)), cost
        return best

    def _diagnose(self) -> list[str]:
        problems = []
        demand = sum(-(-self.days // (7 * s.on_site_every)) * self.n for s in self.sites if s.on_site_every)
        supply = sum(m.days_per_week * len(self.blocks) for m in self.monitors)
        if demand > supply:
            problems.append(f"days_per_week: about {demand} on-site days are needed, the monitors have {supply}")
        return problems or ["the constraints together leave no room (capacity, holidays, days off, kept visits)"]
