"""The demo's monitoring plan (seed_demo): TRIALOPS-DEMO-001's four sites, three monitors (the demo
`cra` in Paris for France and Germany, so for sites 101 and 102 as before; CRAs in Madrid and Boston for
the others), eight weeks
from next Monday, planned at once. Idempotent: a study that has a plan is left alone."""

import datetime
import json

from django.utils import timezone

from sdv.monitoring.models import MonitoringPlan
from sdv.monitoring.plan_import import monitoring_plan_import
from sdv.monitoring.services import monitoring_plan_schedule


def demo_plan(today: datetime.date) -> dict:
    start = today + datetime.timedelta(days=7 - today.weekday())
    return {
        "start": start.isoformat(), "horizon_weeks": 8,
        "frequency": {"high": {"on_site_every_weeks": 4},
                      "medium": {"on_site_every_weeks": 8, "remote_every_weeks": 4},
                      "low": {"remote_every_weeks": 8}},
        "on_site_days": 1,
        "monitors": [
            {"username": "cra", "name": "Clara Rossi", "home": {"city": "Paris", "lat": 48.8566, "lon": 2.3522},
             "countries": ["FR", "DE"], "days_per_week": 3, "remote_hours_per_week": 6},
            {"username": "cra.sofia", "name": "Sofia Navarro", "home": {"city": "Madrid", "lat": 40.4168,
                                                                         "lon": -3.7038},
             "countries": ["ES"], "days_per_week": 3},
            {"username": "cra.liam", "name": "Liam Walsh", "home": {"city": "Boston", "lat": 42.3601, "lon": -71.0589},
             "countries": ["US"], "days_per_week": 3},
        ],
        "sites": {
            "101": {"city": "Paris", "country": "FR", "lat": 48.8493, "lon": 2.3814, "tier": "high",
                    "reason": "out-of-range values and an open critical query"},
            "102": {"city": "Berlin", "country": "DE", "lat": 52.5258, "lon": 13.3772, "tier": "high",
                    "reason": "informed consent deviation"},
            "103": {"city": "Boston", "country": "US", "lat": 42.3627, "lon": -71.069, "tier": "medium",
                    "reason": "serious adverse event reported late"},
            "104": {"city": "Madrid", "country": "ES", "lat": 40.4809, "lon": -3.6869},
        },
    }


def demo_monitoring_seed(*, study, actor) -> MonitoringPlan:
    plan = MonitoringPlan.objects.filter(study=study).order_by("-version").first()
    if plan is not None:
        return plan
    raw = json.dumps(demo_plan(timezone.localdate()), indent=1).encode()
    plan = monitoring_plan_import(study=study, raw=raw, actor=actor, filename="demo-monitoring-plan.json")
    monitoring_plan_schedule(study=study, actor=actor, time_limit=5)
    return plan
