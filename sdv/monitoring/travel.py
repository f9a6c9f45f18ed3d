"""Travel of a monitoring plan.

Distance between two points is the great-circle (haversine) distance on a sphere of the Earth's
mean radius R = 6371.0088 km:

    a = sin²((φ2 − φ1) / 2) + cos φ1 · cos φ2 · sin²((λ2 − λ1) / 2)
    d = 2 R · asin(√a)

with latitudes φ and longitudes λ in radians. A road distance matrix replaces it where one is given
(the plan's optional `road_km`, in km between named points: "home:<username>" and site numbers).

Consecutive on-site days of one monitor form a **trip**: home -> sites in date order -> home, with
overnight stays between (a weekend or any day without an on-site visit ends the trip). A trip's
travel is the sum of its legs; each visit carries the leg that brings the monitor to it (from home,
or from the previous day's site: 0 km for the second day of a multi-day visit), and the last visit
of a trip also carries the way home, so the legs of a trip sum to its travel.
"""

import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((phi2 - phi1) / 2) ** 2
         + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass
class Distances:
    """km between points by name ("home:<username>", a site number), from their coordinates, or
    from a road distance matrix where it has the pair (either direction)."""

    points: dict[str, tuple[float, float]]
    road_km: dict[str, dict[str, float]] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    def km(self, a: str, b: str) -> float:
        if a == b:
            return 0.0
        key = (a, b) if a < b else (b, a)
        if key not in self._cache:
            road = self.road_km.get(a, {}).get(b, self.road_km.get(b, {}).get(a))
            if road is not None:
                self._cache[key] = float(road)
            else:
                (lat1, lon1), (lat2, lon2) = self.points[a], self.points[b]
                self._cache[key] = haversine_km(lat1, lon1, lat2, lon2)
        return self._cache[key]


def home(username: str) -> str:
    return f"home:{username}"


@dataclass
class TripLegs:
    monitor: str
    start: datetime.date
    end: datetime.date
    visits: list  # the on-site visits of the trip, in date order
    legs: list[float]  # km carried by each visit
    travel_km: float


def trips(visits: Iterable, *, days: int, distances: Distances) -> list[TripLegs]:
    """The trips of on-site visits (objects with .monitor (username), .site (number), .date). A
    visit occupies `days` calendar days from its date; a trip is a run of consecutive occupied days."""
    by_monitor: dict[str, list] = {}
    for visit in visits:
        by_monitor.setdefault(visit.monitor, []).append(visit)
    out = []
    for monitor, own in sorted(by_monitor.items()):
        own.sort(key=lambda v: v.date)
        run: list = []
        for visit in own:
            if run and visit.date > run[-1].date + datetime.timedelta(days=days):
                out.append(_trip(monitor, run, days, distances))
                run = []
            run.append(visit)
        if run:
            out.append(_trip(monitor, run, days, distances))
    return out


def _trip(monitor: str, run: list, days: int, distances: Distances) -> TripLegs:
    legs, where = [], home(monitor)
    for visit in run:
        legs.append(distances.km(where, visit.site))
        where = visit.site
    legs[-1] += distances.km(where, home(monitor))
    return TripLegs(monitor=monitor, start=run[0].date, end=run[-1].date + datetime.timedelta(days=days - 1),
                    visits=run, legs=legs, travel_km=sum(legs))


def plan_travel_km(visits: Iterable, *, days: int, distances: Distances) -> float:
    return sum(trip.travel_km for trip in trips(visits, days=days, distances=distances))
