"""`python manage.py bench_monitoring`: the MonitoringOrchestrator's scheduler on generated studies
(sdv/monitoring/generate.py: sites around real cities of real countries, real public holidays,
tiers one third each) of 30 sites x 5 CRAs x 12 weeks and 300 sites x 40 CRAs x 26 weeks: the
constraint breaches the independent checker finds in the solver's plan (must be 0), the plan's
travel against the naive plan (every on-site visit a separate round trip from the nearest eligible
monitor's home; target <= 0.8x) and the solve time (target < 10 s for the small one), measured in
the same run. In memory: no database. The last line is one JSON object."""

import json
import os
import time

from django.core.management.base import BaseCommand

from sdv.monitoring.checker import check
from sdv.monitoring.generate import generated_problem
from sdv.monitoring.naive import naive_plan, round_trips_km
from sdv.monitoring.solver import solve
from sdv.monitoring.travel import plan_travel_km

SIZES = {"small": (30, 5, 12), "large": (300, 40, 26)}


class Command(BaseCommand):
    help = "Benchmark the monitoring scheduler on generated studies; prints one JSON line last."

    def add_arguments(self, parser):
        parser.add_argument("--small-time-limit", type=float, default=7.0, help="solver seconds, small study")
        parser.add_argument("--large-time-limit", type=float, default=90.0, help="solver seconds, large study")
        parser.add_argument("--skip-large", action="store_true")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--workers", type=int, default=2, help="CP-SAT search workers (default 2: both cores)")

    def handle(self, *args, small_time_limit, large_time_limit, skip_large, seed, workers, **options):
        out = {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}
        for name, limit in (("small", small_time_limit), ("large", large_time_limit)):
            if name == "large" and skip_large:
                continue
            sites, monitors, weeks = SIZES[name]
            out[name] = self._measure(sites, monitors, weeks, limit=limit, seed=seed, workers=workers)
            figures = out[name]
            self.stdout.write(f"{name}: {sites} sites x {monitors} CRAs x {weeks} weeks: "
                              f"{figures['breaches']} breaches,"
                              f" travel {figures['travel_km']:.0f} km vs naive {figures['naive_km']:.0f} km "
                              f"({figures['travel_ratio']}x), {figures['seconds']} s ({figures['status']})")
        out["targets_met"] = bool(out["small"]["breaches"] == 0 and out["small"]["travel_ratio"] <= 0.8
                                  and out["small"]["seconds"] < 10
                                  and (skip_large or out["large"]["breaches"] == 0))
        self.stdout.write(json.dumps(out))

    @staticmethod
    def _measure(sites, monitors, weeks, *, limit, seed, workers) -> dict:
        problem = generated_problem(sites=sites, monitors=monitors, weeks=weeks, seed=seed)
        started = time.perf_counter()
        result = solve(problem, time_limit=limit, workers=workers)
        seconds = time.perf_counter() - started
        breaches = check(problem, result.visits)
        on_site = [v for v in result.visits if v.kind == "on_site"]
        travel = plan_travel_km(on_site, days=problem.on_site_days, distances=problem.distances())
        naive = naive_plan(problem)
        by_constraint = {}
        for breach in breaches:
            by_constraint[breach.constraint] = by_constraint.get(breach.constraint, 0) + 1
        return {"sites": sites, "monitors": monitors, "weeks": weeks, "breaches": len(breaches),
                "breaches_by_constraint": by_constraint, "visits": len(result.visits), "on_site": len(on_site),
                "naive_on_site": naive["on_site_visits"], "travel_km": round(travel, 1),
                "naive_km": round(naive["travel_km"], 1),
                "travel_ratio": round(travel / naive["travel_km"], 3) if naive["travel_km"] else None,
                "same_visits_round_trips_km": round(round_trips_km(problem, on_site), 1),
                "seconds": round(seconds, 2), "solver_time_limit": limit, "status": result.status,
                "components": result.components, "workers": workers}
