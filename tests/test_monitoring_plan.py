"""The monitoring plan as data and its scheduling through the database: `import_monitoring_plan`
stores a versioned, audited plan (monitors as CRAs, site locations, tier overrides) or refuses a
bad file naming the key with nothing stored; the scheduling service stores visits and trips with
their audit rows, keeps what is done or confirmed, and re-plans after a tier change."""

import datetime
import json
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client

from sdv.models import KriSnapshot, SiteRiskAssessment
from sdv.monitoring.models import Monitor, MonitoringPlan, MonitoringTierOverride, MonitoringTrip, MonitoringVisit
from sdv.monitoring.plan_import import monitoring_plan_import
from sdv.monitoring.services import monitoring_plan_schedule, monitoring_visit_complete, monitoring_visit_confirm
from sdv.monitoring.travel import haversine_km
from studies.audit import set_audit
from studies.models import Role, Site, StudyMembership
from studies.services import membership_grant
from tests.factories import SiteFactory, StudyFactory, UserFactory

pytestmark = pytest.mark.django_db
PLAN = Path(__file__).parent / "data" / "monitoring" / "plan_small.json"
TODAY = datetime.date(2026, 3, 2)


@pytest.fixture
def study():
    study = StudyFactory(protocol_id="MON-1")
    for number in ("701", "702", "703", "704"):
        SiteFactory(study=study, number=number, country="FR", city="Paris")
    return study


def plan_bytes(**changes) -> bytes:
    document = json.loads(PLAN.read_text())
    document.update(changes)
    return json.dumps(document).encode()


def test_the_command_imports_the_plan_versioned_and_audited(study, tmp_path):
    out = StringIO()
    call_command("import_monitoring_plan", str(PLAN), "--study", "MON-1", stdout=out)
    plan = MonitoringPlan.objects.get(study=study)
    assert (plan.version, plan.start, plan.horizon_weeks, plan.on_site_days) == (1, TODAY, 8, 1)
    assert plan.document["comment"] == "extra keys are allowed" and len(plan.sha256) == 64
    assert "v1 of MON-1: 4 site(s), 2 monitor(s), 4 tier override(s)" in out.getvalue()
    # The sites' city, country and coordinates, audited with the plan's reason.
    graz = Site.objects.get(study=study, number="701")
    assert (graz.city, graz.country, float(graz.latitude), float(graz.longitude)) == ("Graz", "AT", 47.07, 15.44)
    change = graz.history.first()
    assert change.history_type == "~" and change.history_user.username == "system.import"
    assert change.history_change_reason.startswith("Monitoring plan v1 (plan_small.json, sha256 ")
    # Tier overrides with their reasons; 704's tier comes from the plan too, 702 without a reason.
    overrides = {o.site.number: (o.tier, o.reason) for o in MonitoringTierOverride.objects.filter(plan=plan)}
    assert overrides == {"701": ("high", "new PI"), "702": ("medium", ""), "703": ("high", "slow enrolment"),
                         "704": ("low", "")}
    # Monitors: accounts created as CRAs of the study, with no usable password.
    anna = Monitor.objects.get(study=study, user__username="cra.anna")
    assert (anna.name, anna.countries, anna.days_per_week, anna.home_city) == ("Anna Berg", ["AT", "CZ"], 4, "Vienna")
    assert not anna.user.has_usable_password()
    assert StudyMembership.objects.filter(user=anna.user, study=study, role=Role.CRA).exists()
    assert Monitor.objects.get(user__username="cra.jan").days_off == ["2026-03-16"]
    assert anna.history.get().history_user.username == "system.import"
    # Again: version 2, the same monitors (updated, not doubled).
    call_command("import_monitoring_plan", str(PLAN), "--study", "MON-1", stdout=StringIO())
    assert list(MonitoringPlan.objects.filter(study=study).values_list("version", flat=True)) == [2, 1]
    assert Monitor.objects.filter(study=study).count() == 2


@pytest.mark.parametrize(("document", "key"), [
    ({"horizon_weeks": "eight"}, "horizon_weeks"),
    ({"start": "2026-02-30"}, "start"),
    ({"frequency": {"high": {"on_site_every_weeks": 4}, "medium": {}}}, "frequency.low"),
    ({"monitors": [{"username": "x", "name": "X", "home": {"lat": 1, "lon": 2}, "countries": ["AUT"],
                    "days_per_week": 4}]}, "monitors[0].countries[0]"),
    ({"monitors": [{"username": "x", "name": "X", "home": {"lat": 1}, "countries": ["AT"], "days_per_week": 4}]},
     "monitors[0].home.lon"),
    ({"sites": {"999": {"country": "AT", "lat": 47, "lon": 15}}}, "sites.999"),
    ({"sites": {"701": {"country": "AT", "lat": 147, "lon": 15}}}, "sites.701.lat"),
])
def test_a_bad_plan_is_refused_naming_the_key_and_nothing_is_stored(study, document, key):
    actor = UserFactory(username="sponsor.a")
    users = get_user_model().objects.count()
    with pytest.raises(ValidationError) as refused:
        monitoring_plan_import(study=study, raw=plan_bytes(**document), actor=actor)
    assert key in refused.value.message_dict, refused.value.message_dict
    assert not MonitoringPlan.objects.exists() and not Monitor.objects.exists()
    assert get_user_model().objects.count() == users
    assert set(Site.objects.filter(study=study).values_list("city", flat=True)) == {"Paris"}


def test_the_command_refuses_a_file_that_is_not_json_and_stores_nothing(study, tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text('{"start": "2026-03-02",')
    with pytest.raises(CommandError, match="plan refused, nothing stored: file: not JSON"):
        call_command("import_monitoring_plan", str(bad), "--study", "MON-1")
    duplicate = json.loads(PLAN.read_text())
    duplicate["monitors"].append(duplicate["monitors"][0])
    bad.write_text(json.dumps(duplicate))
    with pytest.raises(CommandError, match=r"monitors\[2\].username: 'cra.anna' appears twice"):
        call_command("import_monitoring_plan", str(bad), "--study", "MON-1")
    assert not MonitoringPlan.objects.exists()


def assess(study, day: datetime.date, tiers: dict[str, str], actor):
    snapshot = KriSnapshot.objects.create(study=study, snapshot_date=day)
    for number, tier in tiers.items():
        assessment = SiteRiskAssessment(snapshot=snapshot, site=Site.objects.get(study=study, number=number),
                                        risk_score={"low": 0, "medium": 15, "high": 40}[tier], tier=tier)
        set_audit(assessment, actor=actor, reason="test assessment")
        assessment.save()


def test_scheduling_stores_visits_and_trips_and_a_tier_change_replans_keeping_what_is_kept(study):
    actor = UserFactory(username="agent.test")
    document = json.loads(PLAN.read_text())
    for number in ("702", "704"):  # these two take their tier from the latest risk assessment
        del document["sites"][number]["tier"]
    monitoring_plan_import(study=study, raw=json.dumps(document).encode(), actor=actor)
    assess(study, datetime.date(2026, 2, 27), {"701": "high", "702": "low", "703": "high", "704": "low"}, actor)

    figures = monitoring_plan_schedule(study=study, actor=actor, today=TODAY, time_limit=3)
    visits = MonitoringVisit.objects.filter(study=study)
    assert figures["visits"] == visits.count() and figures["added"] == visits.count() and figures["breaches"] == 0
    assert figures["tiers"] == {"701": "high", "702": "low", "703": "high", "704": "low"}
    on_site = visits.filter(kind="on_site")
    assert set(on_site.values_list("site__number", flat=True)) == {"701", "703"}  # low sites: remote only
    assert sum(on_site.values_list("travel_km", flat=True)) == pytest.approx(
        sum(MonitoringTrip.objects.filter(study=study).values_list("travel_km", flat=True)))
    assert figures["travel_km"] <= figures["naive_km"]
    first = visits.order_by("date").first()
    assert "(plan v1 override: new PI)" in visits.filter(site__number="701").first().reason
    assert "risk assessment of 2026-02-27" in visits.filter(site__number="702").first().reason
    created = first.history.earliest()
    assert created.history_user == actor and created.history_change_reason.startswith("Planned from monitoring plan")
    # The monitor is granted the sites they are planned at (they may read them).
    from studies.selectors import site_list
    anna = get_user_model().objects.get(username="cra.anna")
    assert set(site_list(user=anna, study=study).values_list("number", flat=True)) >= set(
        visits.filter(monitor__user=anna).values_list("site__number", flat=True))

    # One visit is confirmed; then site 702 becomes high risk: it needs on-site visits now.
    confirmed = monitoring_visit_confirm(visit=on_site.order_by("date").first(), actor=actor)
    before = {v.pk: (v.date, v.monitor_id, v.status) for v in visits.exclude(site__number="702")}
    assess(study, datetime.date(2026, 3, 1), {"701": "high", "702": "high", "703": "high", "704": "low"}, actor)
    again = monitoring_plan_schedule(study=study, actor=actor, today=TODAY, time_limit=3)
    assert again["tiers"]["702"] == "high" and again["breaches"] == 0
    new = visits.filter(site__number="702", kind="on_site").exclude(status="cancelled")
    assert new.count() == 2 and all(v.reason.startswith("risk change low -> high: high risk") for v in new)
    confirmed.refresh_from_db()
    assert confirmed.status == "confirmed"
    # Nothing else had to move: every other site's visits are where they were.
    assert {v.pk: (v.date, v.monitor_id, v.status) for v in visits.exclude(site__number="702")
            if v.pk in before} == {pk: b for pk, b in before.items() if b[2] != "cancelled"}
    assert again["moved"] == 0


def test_a_study_without_a_plan_is_skipped(study):
    assert monitoring_plan_schedule(study=study, actor=UserFactory())["skipped"].startswith("no monitoring plan")
    assert not MonitoringVisit.objects.exists()


def test_an_impossible_plan_is_refused_and_nothing_is_stored(study):
    document = json.loads(PLAN.read_text())
    document["frequency"]["high"] = {"on_site_every_weeks": 1}
    for spec in document["monitors"]:
        spec["days_per_week"] = 0
    monitoring_plan_import(study=study, raw=json.dumps(document).encode(), actor=UserFactory(username="s"))
    with pytest.raises(ValidationError, match="no plan meets every constraint"):
        monitoring_plan_schedule(study=study, actor=UserFactory(), today=TODAY, time_limit=2)
    assert not MonitoringVisit.objects.exists() and not MonitoringTrip.objects.exists()
    assert MonitoringPlan.objects.get(study=study).last_result == {}


def test_a_site_left_out_of_the_plan_takes_its_tier_from_the_latest_risk_assessment(study):
    actor = UserFactory(username="agent.test")
    sponsor = UserFactory(username="sponsor.t")
    membership_grant(user=sponsor, study=study, role=Role.SPONSOR)
    monitoring_plan_import(study=study, raw=PLAN.read_bytes(), actor=actor)  # v1 gives 704 its location
    document = json.loads(PLAN.read_text())
    del document["sites"]["704"]  # v2 leaves 704 out: no override, its tier from the assessment
    monitoring_plan_import(study=study, raw=json.dumps(document).encode(), actor=actor)
    new_site = SiteFactory(study=study, number="705", country="", latitude=None, longitude=None)  # in no plan
    assess(study, datetime.date(2026, 2, 27), {"701": "low", "702": "low", "703": "low", "704": "high"}, actor)

    figures = monitoring_plan_schedule(study=study, actor=actor, today=TODAY, time_limit=3)
    assert figures["tiers"]["704"] == "high" and figures["tiers"]["701"] == "high"  # 701: v2's override
    visits = MonitoringVisit.objects.filter(study=study, site__number="704", kind="on_site")
    assert visits.count() == 2 and all("high risk (risk assessment of 2026-02-27" in v.reason for v in visits)
    # 705 has no location and is not planned: said so, not left out in silence.
    assert not MonitoringVisit.objects.filter(site=new_site).exists()
    assert [u["site"] for u in figures["unplanned"]] == ["705"]
    assert "no location" in figures["unplanned"][0]["why"] and figures["unplanned"][0]["tier"] == "high"
    client = Client()
    client.force_login(sponsor)
    html = client.get(f"/studies/{study.pk}/monitoring/?at=2026-03-02").content.decode()
    assert 'id="breach-count">1<' in html and "location" in html and "site 705" in html


def test_a_road_distance_matrix_in_the_plan_replaces_the_great_circle_in_the_trips(study):
    actor = UserFactory(username="agent.road")
    document = json.loads(PLAN.read_text())
    road = {("home:cra.anna", "701"): 500.0, ("701", "702"): 77.0}
    document["road_km"] = {"home:cra.anna": {"701": 500.0}, "702": {"701": 77.0}}  # either direction
    monitoring_plan_import(study=study, raw=json.dumps(document).encode(), actor=actor)
    figures = monitoring_plan_schedule(study=study, actor=actor, today=TODAY, time_limit=3)
    where = {n: (s["lat"], s["lon"]) for n, s in document["sites"].items()}
    where |= {f"home:{m['username']}": (m["home"]["lat"], m["home"]["lon"]) for m in document["monitors"]}

    def km(a, b):
        pair = road.get((a, b), road.get((b, a)))
        return pair if pair is not None else haversine_km(*where[a], *where[b])

    trips = list(MonitoringTrip.objects.filter(study=study))
    assert any(t.visits.filter(site__number="701").exists() for t in trips)
    for trip in trips:
        stops = [f"home:{trip.monitor.user.username}",
                 *trip.visits.order_by("date").values_list("site__number", flat=True),
                 f"home:{trip.monitor.user.username}"]
        assert trip.travel_km == pytest.approx(sum(km(a, b) for a, b in zip(stops, stops[1:], strict=False)), abs=0.01)
        assert sum(trip.visits.values_list("travel_km", flat=True)) == pytest.approx(trip.travel_km, abs=0.01)
    assert figures["travel_km"] == pytest.approx(sum(t.travel_km for t in trips), abs=0.1)


def test_a_monitor_who_left_the_plan_keeps_their_visits_done_and_the_study_is_planned_again(study):
    actor = UserFactory(username="agent.left")
    monitoring_plan_import(study=study, raw=PLAN.read_bytes(), actor=actor)
    monitoring_plan_schedule(study=study, actor=actor, today=TODAY, time_limit=3)
    done = MonitoringVisit.objects.filter(study=study, monitor__user__username="cra.jan").order_by("date").first()
    monitoring_visit_complete(visit=done, actor=actor, today=done.date)
    document = json.loads(PLAN.read_text())
    document["monitors"] = [m for m in document["monitors"] if m["username"] != "cra.jan"]  # jan left
    monitoring_plan_import(study=study, raw=json.dumps(document).encode(), actor=actor)
    later = done.date + datetime.timedelta(days=1)

    figures = monitoring_plan_schedule(study=study, actor=actor, today=later, time_limit=3)
    assert figures["breaches"] == 0
    done.refresh_from_db()
    assert (done.status, done.monitor.user.username, done.date) == ("done", "cra.jan", done.date)
    # What jan had planned from that day on is anna's now (or no longer needed).
    assert not MonitoringVisit.objects.filter(study=study, monitor__user__username="cra.jan", status="planned",
                                              date__gte=later).exists()
