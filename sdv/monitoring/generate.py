"""Generated monitoring problems for bench_monitoring and the tests: sites clustered around real
cities of real countries (so public holidays are real), monitors living in those countries, each
allowed to work in their own country and a neighbour of the same region."""

import datetime
import random

from sdv.monitoring.problem import MonitorSpec, Problem, SiteNeed

# Regions of four countries each: (code, [(city, lat, lon), ...]).
REGIONS = [
    [("DE", [("Berlin", 52.52, 13.40), ("Munich", 48.14, 11.58), ("Hamburg", 53.55, 9.99)]),
     ("AT", [("Vienna", 48.21, 16.37), ("Graz", 47.07, 15.44), ("Innsbruck", 47.27, 11.40)]),
     ("CZ", [("Prague", 50.08, 14.44), ("Brno", 49.20, 16.61), ("Ostrava", 49.82, 18.26)]),
     ("PL", [("Warsaw", 52.23, 21.01), ("Krakow", 50.06, 19.94), ("Gdansk", 54.35, 18.65)])],
    [("FR", [("Paris", 48.86, 2.35), ("Lyon", 45.76, 4.84), ("Toulouse", 43.60, 1.44)]),
     ("BE", [("Brussels", 50.85, 4.35), ("Antwerp", 51.22, 4.40), ("Liege", 50.63, 5.57)]),
     ("NL", [("Amsterdam", 52.37, 4.90), ("Rotterdam", 51.92, 4.48), ("Groningen", 53.22, 6.57)]),
     ("CH", [("Zurich", 47.38, 8.54), ("Geneva", 46.20, 6.14), ("Basel", 47.56, 7.59)])],
    [("ES", [("Madrid", 40.42, -3.70), ("Barcelona", 41.39, 2.17), ("Seville", 37.39, -5.98)]),
     ("PT", [("Lisbon", 38.72, -9.14), ("Porto", 41.15, -8.61), ("Coimbra", 40.21, -8.43)]),
     ("IT", [("Rome", 41.90, 12.50), ("Milan", 45.46, 9.19), ("Naples", 40.85, 14.27)]),
     ("GR", [("Athens", 37.98, 23.73), ("Thessaloniki", 40.64, 22.94), ("Patras", 38.25, 21.73)])],
    [("SE", [("Stockholm", 59.33, 18.07), ("Gothenburg", 57.71, 11.97), ("Malmo", 55.60, 13.00)]),
     ("DK", [("Copenhagen", 55.68, 12.57), ("Aarhus", 56.16, 10.20), ("Odense", 55.40, 10.39)]),
     ("NO", [("Oslo", 59.91, 10.75), ("Bergen", 60.39, 5.32), ("Trondheim", 63.43, 10.40)]),
     ("FI", [("Helsinki", 60.17, 24.94), ("Tampere", 61.50, 23.76), ("Turku", 60.45, 22.27)])],
    [("HU", [("Budapest", 47.50, 19.04), ("Debrecen", 47.53, 21.63), ("Szeged", 46.25, 20.15)]),
     ("RO", [("Bucharest", 44.43, 26.10), ("Cluj-Napoca", 46.77, 23.59), ("Iasi", 47.16, 27.59)]),
     ("BG", [("Sofia", 42.70, 23.32), ("Plovdiv", 42.14, 24.75), ("Varna", 43.21, 27.91)]),
     ("HR", [("Zagreb", 45.81, 15.98), ("Split", 43.51, 16.44), ("Rijeka", 45.33, 14.44)])],
]
FREQUENCY = {"high": {"on_site_every_weeks": 4}, "medium": {"on_site_every_weeks": 8, "remote_every_weeks": 4},
             "low": {"remote_every_weeks": 8}}


def generated_problem(*, sites: int, monitors: int, weeks: int, seed: int = 7,
                      start: datetime.date = datetime.date(2026, 3, 2), days_per_week: int = 4) -> Problem:
    """`sites` sites spread over as many countries as needed (15 a country at most, around three
    cities each), `monitors` monitors spread evenly over those countries, each allowed their own
    country and the next one of its region; tiers one third each."""
    rng = random.Random(seed)
    countries = [c for region in REGIONS for c in region]
    n_countries = max(1, min(len(countries), -(-sites // 15), monitors))
    # Take whole regions first, so a study stays within a few regions.
    chosen = countries[:n_countries]
    site_needs = []
    for i in range(sites):
        code, cities = chosen[i % n_countries]
        city, lat, lon = cities[rng.randrange(len(cities))]
        tier = ("high", "medium", "low")[i % 3]
        site_needs.append(SiteNeed(number=f"{1000 + i}", country=code, lat=lat + rng.uniform(-0.3, 0.3),
                                   lon=lon + rng.uniform(-0.4, 0.4), tier=tier,
                                   on_site_every=FREQUENCY[tier].get("on_site_every_weeks"),
                                   remote_every=FREQUENCY[tier].get("remote_every_weeks"),
                                   reason=f"{tier} risk (generated)"))
    specs = []
    for j in range(monitors):
        index = j % n_countries
        code, cities = chosen[index]
        region = index // 4
        neighbour = chosen[region * 4 + (index % 4 + 1) % 4][0] if region * 4 + 3 < n_countries else code
        city, lat, lon = cities[(j // n_countries) % len(cities)]
        specs.append(MonitorSpec(username=f"cra{j:03d}", lat=lat, lon=lon, countries=frozenset({code, neighbour}),
                                 days_per_week=days_per_week, remote_hours_per_week=8))
    return Problem(start=start, horizon_weeks=weeks, on_site_days=1, sites=site_needs, monitors=specs,
                   not_before=start)
