"""Risk assessment from the database: KRI snapshot stored per date with its trend, site tiers and
explanations, `risk.changed` when a tier moves, quality tolerance limits, bad definitions
reported rather than crashing the run, and SDV plans with stable sampling and their audit rows."""

import datetime

import pytest
from django.core.exceptions import ValidationError

from agents.models import Event
from deviations.models import Deviation
from sdv.kri import KriMethod, binomial_interval, kri_from_groups
from sdv.models import KriDefinition, KriResult, KriSnapshot, SdvPlan, SdvSelection, SiteRiskAssessment
from sdv.sdv_plan import sdv_plan_update
from sdv.services import kri_definition_update, kri_definitions_seed, kri_snapshot_compute, risk_config_set
from studies.audit import set_audit
from studies.models import DataPoint, ItemDefinition
from studies.services import data_point_update
from tests.factories import (
    DataPointFactory,
    FormDefinitionFactory,
    ItemDefinitionFactory,
    SiteFactory,
    StudyFactory,
    SubjectFactory,
    SubjectVisitFactory,
    UserFactory,
)

DAY = datetime.date(2025, 6, 1)
AES = {"101": 1, "102": 2, "103": 1, "104": 12, "105": 1, "106": 2, "107": 1, "108": 2, "109": 1, "110": 2}


def add_ae(subject, visit, items, n: int, *, serious: str, onset: str):
    for item, value in ((items["AE.AETERM"], "Headache"), (items["AE.AESER"], serious),
                        (items["AE.AESTDAT"], onset)):
        DataPointFactory(visit=visit, item=item, form=item.form, repeat_key=str(n), raw_value=value,
                         value_number=None, value_date=datetime.date.fromisoformat(onset) if item.oid.endswith("DAT")
                         else None)


def build_world(protocol_id: str = "RBM-1"):
    """Ten sites of 5 subjects on study 100 days; site 104 reports many AEs and deviations (with
    fewer sites no over-dispersion-adjusted score can reach 2: |z| <= sqrt(sites - 1))."""
    study = StudyFactory(protocol_id=protocol_id)
    form = FormDefinitionFactory(study=study, oid="AE")
    items = {oid: ItemDefinitionFactory(study=study, form=form, oid=oid, data_type="text") for oid in
             ("AE.AETERM", "AE.AESER")}
    items["AE.AESTDAT"] = ItemDefinitionFactory(study=study, form=form, oid="AE.AESTDAT", data_type="date")
    seeder = UserFactory(username="seeder")
    sites, n = [], 0
    for number, aes in AES.items():
        site = SiteFactory(study=study, number=number)
        sites.append(site)
        for s in range(5):
            subject = SubjectFactory(site=site, enrolment_date=datetime.date(2025, 1, 1))
            visit = SubjectVisitFactory(subject=subject, actual_date=datetime.date(2025, 4, 10))
            for _ in range(aes if s == 0 else 0):
                n += 1
                add_ae(subject, visit, items, n, serious="Y" if n % 3 == 0 else "N", onset="2025-03-01")
            if number == "104" or s == 0:
                deviation = Deviation(study=study, site=site, subject=subject, description="Visit out of window",
                                      importance=Deviation.Importance.IMPORTANT)
                set_audit(deviation, actor=seeder, reason="test setup")
                deviation.save()
    return study, sites


@pytest.fixture
def world(db):
    return build_world()


def test_a_snapshot_stores_every_kri_and_matches_the_engine_on_the_same_totals(world):
    study, sites = world
    actor = UserFactory(username="rbm")
    snapshot = kri_snapshot_compute(study=study, snapshot_date=DAY, actor=actor)
    levels = list(KriDefinition.objects.filter(study=study).values_list("level", flat=True))
    assert (levels.count("site"), levels.count("country"), levels.count("study")) == (15, 15, 3)
    assert KriDefinition.history.filter(study_id=study.pk, history_user=actor).count() == 33
    ae = {r.group: r for r in KriResult.objects.filter(snapshot=snapshot, kri_id="kri0001")}
    assert [ae[s.number].numerator for s in sites] == list(AES.values())
    assert ae["101"].denominator == 5 * 100  # 2025-01-01 .. 2025-04-10, both days counted
    expected = kri_from_groups(groups=[s.number for s in sites], numerator=list(AES.values()), denominator=[500] * 10,
                               method=KriMethod(analysis="normal_rate", thresholds=(-2, -1, 2, 3),
                                                accrual_threshold=30, accrual_metric="denominator"))
    assert [ae[s.number].score for s in sites] == pytest.approx(list(expected.score), abs=1e-12)
    assert ae["104"].site_id == sites[3].pk and ae["104"].flag == 1 and ae["104"].overall == pytest.approx(25 / 5000)
    unavailable = {p["kri"] for p in snapshot.problems}
    assert {"kri0010", "kri0013", "kri0014", "kri0015"} <= unavailable  # data pages, PK, I/E, deaths
    assert KriResult.objects.filter(snapshot=snapshot, kri_id="cou0001").get().group == "FR"
    assert KriResult.objects.get(snapshot=snapshot, kri_id="qtl0004").group == "RBM-1"
    risk = SiteRiskAssessment.objects.get(snapshot=snapshot, site=sites[3])
    assert risk.flagged[0]["kri"] in {"kri0001", "kri0004"} and risk.tier == "high"
    assert "Site 104" in risk.explanation and "higher than the study" in risk.explanation
    assert "Adverse Event Rate" in risk.explanation
    history = risk.history.get()
    assert history.history_user == actor and "2025-06-01" in history.history_change_reason
    assert snapshot.seconds > 0


def test_quality_tolerance_limits_use_the_exact_binomial_interval(world):
    study, _ = world
    actor = UserFactory(username="rbm")
    risk_config_set(study=study, actor=actor, reason="QTLs from the protocol",
                    qtls=[{"kri": "qtl0004", "limit": 0.2, "historical": 0.1}, {"kri": "qtl0006", "limit": 0.05},
                          {"kri": "std0012", "limit": 0.1}, {"kri": "nope", "limit": 0.1}])
    snapshot = kri_snapshot_compute(study=study, snapshot_date=DAY, actor=actor)
    qtl = {q["kri"]: q for q in KriSnapshot.objects.get(pk=snapshot.pk).qtl}
    # 14 of 50 subjects with an important deviation: all five at site 104, the first at the others.
    low, high = binomial_interval(14, 50)
    assert (qtl["qtl0004"]["numerator"], qtl["qtl0004"]["denominator"]) == (14, 50)
    assert (qtl["qtl0004"]["ci_low"], qtl["qtl0004"]["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    assert qtl["qtl0004"]["status"] == "above" and low < 0.2 < 14 / 50  # above the limit, not credibly
    assert qtl["qtl0004"]["ratio_to_historical"] == pytest.approx(2.8)
    assert qtl["qtl0006"]["status"] == "within" and qtl["qtl0006"]["numerator"] == 0
    assert qtl["std0012"]["status"] == "within"
    assert qtl["nope"]["status"] == "not computed"


def test_a_tier_change_between_snapshots_publishes_risk_changed(world):
    study, sites = world
    actor = UserFactory(username="rbm")
    risk_config_set(study=study, actor=actor, reason="tight tiers", medium_from=1, high_from=50)
    kri_snapshot_compute(study=study, snapshot_date=DAY, actor=actor)
    first = dict(SiteRiskAssessment.objects.values_list("site__number", "tier"))
    assert not Event.objects.filter(type="risk.changed").exists()  # a first assessment is no change
    risk_config_set(study=study, actor=actor, reason="looser tiers", medium_from=99, high_from=100)
    later = kri_snapshot_compute(study=study, snapshot_date=DAY + datetime.timedelta(days=30), actor=actor)
    moved = [n for n, tier in first.items() if tier != "low"]
    events = Event.objects.filter(type="risk.changed", study_id=study.pk)
    assert sorted(e.payload["site"] for e in events) == sorted(moved) and moved
    assert all(e.payload["to"] == "low" and e.payload["snapshot"] == later.snapshot_date.isoformat() for e in events)
    assert SiteRiskAssessment.objects.get(snapshot=later, site=sites[3]).previous_tier == first["104"]


def test_flags_changed_and_consecutive_flagged_snapshots_are_stored(world):
    study, sites = world
    actor = UserFactory(username="rbm")
    first = kri_snapshot_compute(study=study, snapshot_date=DAY, actor=actor)
    second = kri_snapshot_compute(study=study, snapshot_date=DAY + datetime.timedelta(days=30), actor=actor)
    row = KriResult.objects.get(snapshot=second, kri_id="kri0001", group="104")
    assert (row.flag, row.previous_flag, row.flag_changed, row.consecutive_flagged) == (1, 1, False, 2)
    assert not KriResult.objects.filter(snapshot=first, flag_changed=True).exists()  # nothing to compare with
    kri_definition_update(definition=KriDefinition.objects.get(study=study, kri_id="kri0001"), actor=actor,
                          reason="wider bounds", thresholds=[-9, -8, 8, 9])
    third = kri_snapshot_compute(study=study, snapshot_date=DAY + datetime.timedelta(days=60), actor=actor)
    row = KriResult.objects.get(snapshot=third, kri_id="kri0001", group="104")
    assert (row.flag, row.previous_flag, row.flag_changed, row.consecutive_flagged) == (0, 1, True, 0)
    assert row.definition_version == 2
    assert set(KriResult.objects.filter(snapshot=third, flag_changed=True).values_list("kri_id", "group")) == {
        ("kri0001", "104")}


def test_a_definition_the_engine_cannot_read_is_refused_with_why_and_nothing_changes(world):
    study, _ = world
    actor = UserFactory(username="rbm")
    kri_definitions_seed(study=study, actor=actor)
    definition = KriDefinition.objects.get(study=study, kri_id="kri0002")
    for changes, message in (({"numerator": {"source": "adverse_event"}}, "unknown source 'adverse_event'"),
                             ({"numerator": {"source": "deviations", "filters": {"colour": "red"}}},
                              "unknown filter(s) colour"),
                             ({"denominator": {"source": "subjects", "sum": "height"}}, "unknown subject field"),
                             ({"thresholds": ["high"]}, "'high' is not a number"),
                             ({"thresholds": [2, 3], "flags": [0, 1]}, "need 3 flags"),
                             ({"population": "everyone"}, "unknown population")):
        with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            kri_definition_update(definition=definition, actor=actor, reason="typo", **changes)
    definition.refresh_from_db()
    assert definition.version == 1 and definition.numerator["source"] == "adverse_events"
    assert definition.history.count() == 1


def test_stored_definitions_that_cannot_be_computed_are_reported_and_the_rest_goes_on(world):
    study, _ = world
    actor = UserFactory(username="rbm")
    kri_definitions_seed(study=study, actor=actor)
    # Rows as an older release or a hand edit could have left them (not through the service).
    broken = {"kri0002": {"numerator": {"source": "adverse_event"}}, "kri0003": {"thresholds": ["high", 3]},
              "kri0004": {"denominator": {"source": "queries", "filters": {"state": ["lost"]}}}}
    for kri_id, changes in broken.items():
        definition = KriDefinition.objects.get(study=study, kri_id=kri_id)
        for name, value in changes.items():
            setattr(definition, name, value)
        set_audit(definition, actor=actor, reason="hand edit")
        definition.save()
    snapshot = kri_snapshot_compute(study=study, snapshot_date=DAY, actor=actor)
    problems = {p["kri"]: p["problem"] for p in snapshot.problems}
    assert problems["kri0002"] == ("unknown source 'adverse_event'; one of subjects, adverse_events, deviations, "
                                   "lab_results, queries, data_points")
    assert problems["kri0003"] == "thresholds: 'high' is not a number"
    assert problems["kri0004"].startswith("unknown state 'lost'")
    assert problems["kri0005"] == "every denominator is 0"  # no lab results in this study
    assert not KriResult.objects.filter(snapshot=snapshot, kri_id__in=["kri0002", "kri0003", "kri0004", "kri0005"])
    assert KriResult.objects.filter(snapshot=snapshot, kri_id="kri0001").count() == 10
    assert SiteRiskAssessment.objects.filter(snapshot=snapshot).count() == 10


def test_a_site_whose_denominator_is_zero_is_dropped_as_gsm_drops_it(world):
    study, _ = world
    late = SiteFactory(study=study, number="111")
    SubjectFactory(site=late, enrolment_date=None)  # no enrolment date, no visit: no days on study
    snapshot = kri_snapshot_compute(study=study, snapshot_date=DAY, actor=UserFactory(username="rbm"))
    assert not KriResult.objects.filter(snapshot=snapshot, kri_id="kri0001", group="111").exists()
    assert {"kri": "kri0001", "problem": "1 group(s) with a zero denominator left out: 111"} in snapshot.problems
    assert KriResult.objects.filter(snapshot=snapshot, kri_id="kri0001").count() == 10
    assert SiteRiskAssessment.objects.get(snapshot=snapshot, site=late).tier == "low"


@pytest.mark.django_db
def test_a_study_without_subjects_is_reported_not_crashed():
    study = StudyFactory()
    site = SiteFactory(study=study)
    snapshot = kri_snapshot_compute(study=study, snapshot_date=DAY, actor=UserFactory(username="rbm"))
    assert {p["problem"] for p in snapshot.problems} >= {"no subjects"}
    assert all(p["problem"] == "no subjects" or "not available" in p["problem"] for p in snapshot.problems)
    assert not snapshot.results.exists()
    assessment = SiteRiskAssessment.objects.get(snapshot=snapshot, site=site)
    assert (assessment.risk_score, assessment.tier) == (0, "low")


def test_an_sdv_plan_verifies_critical_data_first_subjects_and_a_stable_sample(world):
    study, sites = world
    actor = UserFactory(username="rbm")
    site = sites[3]
    risk_config_set(study=study, actor=actor, reason="plan", first_subjects_fully=1,
                    critical_rules=[{"kind": "item", "oid": "AE.AESER"}], sdv_share={"high": 0.5, "low": 0.1})
    plan = sdv_plan_update(site=site, actor=actor, reason="first plan")  # unassessed: planned as high risk
    selected = dict(SdvSelection.objects.filter(site=site).values_list("data_point_id", "reason"))
    serious_points = DataPoint.objects.filter(subject__site=site, item__oid="AE.AESER")
    assert set(serious_points.values_list("pk", flat=True)) <= set(selected)
    assert {selected[pk] for pk in serious_points.values_list("pk", flat=True)} == {"critical"}
    first = DataPoint.objects.filter(subject__site=site).order_by("subject__subject_id").first().subject
    assert all(selected[p.pk] in ("critical", "first_subjects") for p in first.data_points.all())
    assert plan.tier == "high" and plan.share == 0.5 and plan.counts["selected"] == len(selected)
    assert "first plan: high risk (first plan; 50% sampled" in plan.reason
    assert all(DataPoint.objects.get(pk=pk).sdv_state == "to_verify" for pk in selected)
    assert SdvSelection.history.filter(site_id=site.pk, history_user=actor).count() == len(selected)
    point = DataPoint.objects.get(pk=next(iter(selected)))
    assert point.history.first().history_change_reason == f"Selected for SDV: {plan.reason}"
    assert SdvSelection.objects.get(data_point=point).history.get().history_change_reason == plan.reason
    # Recomputed at a lower tier: nothing selected before is withdrawn, nothing new is drawn twice.
    kri_snapshot_compute(study=study, snapshot_date=DAY, actor=actor)
    assert SiteRiskAssessment.objects.get(site=site).tier == "high"
    risk_config_set(study=study, actor=actor, reason="looser", medium_from=99, high_from=100)
    kri_snapshot_compute(study=study, snapshot_date=DAY, actor=actor)
    again = sdv_plan_update(site=site, actor=actor, reason="tier changed")
    assert again.tier == "low" and "was high" in again.reason
    assert set(selected) <= set(SdvSelection.objects.filter(site=site).values_list("data_point_id", flat=True))
    assert again.counts["selected"] == SdvSelection.objects.filter(site=site).count()
    assert list(SdvPlan.history.filter(site_id=site.pk).values_list("tier", flat=True)) == ["low", "high"]


def test_data_entered_after_a_plan_is_planned_at_the_next_assessment(world):
    from sdv.sdv_plan import sdv_plans_update

    study, sites = world
    actor = UserFactory(username="rbm")
    first = sdv_plans_update(study=study, sites=sites, actor=actor, reason="first")
    assert len(first) == 10
    assert sdv_plans_update(study=study, sites=sites, actor=actor, reason="nothing new") == []
    subject = SubjectFactory(site=sites[0], enrolment_date=datetime.date(2025, 5, 1))
    visit = SubjectVisitFactory(subject=subject, actual_date=datetime.date(2025, 5, 2))
    item = ItemDefinition.objects.get(study=study, oid="AE.AESER")
    point = DataPointFactory(visit=visit, item=item, form=item.form, raw_value="Y", value_number=None)
    [plan] = sdv_plans_update(study=study, sites=sites, actor=actor, reason="daily")
    assert plan.site == sites[0] and plan.reason == "daily: 1 new data point(s) selected at high risk"
    assert SdvSelection.objects.get(data_point=point).reason == "critical"
    point.refresh_from_db()
    assert point.sdv_state == "to_verify"
    assert SdvPlan.history.filter(site_id=sites[0].pk).count() == 2


def test_the_default_critical_rules_select_serious_ae_flags(world):
    study, sites = world
    actor = UserFactory(username="rbm")
    risk_config_set(study=study, actor=actor, reason="none sampled", sdv_share={"high": 0, "low": 0, "medium": 0},
                    first_subjects_fully=0)
    sdv_plan_update(site=sites[0], actor=actor, reason="plan")
    chosen = SdvSelection.objects.filter(site=sites[0])
    assert set(chosen.values_list("data_point__item__oid", "reason")) == {("AE.AESER", "critical")}


def test_a_selected_value_that_changes_after_verification_goes_back_to_to_verify(world):
    study, sites = world
    actor, coordinator = UserFactory(username="rbm"), UserFactory(username="sc")
    sdv_plan_update(site=sites[3], actor=actor, reason="plan")
    point = SdvSelection.objects.filter(site=sites[3], data_point__item__oid="AE.AETERM").first().data_point
    point.sdv_state = DataPoint.SdvState.VERIFIED
    set_audit(point, actor=actor, reason="verified against the source")
    point.save()
    data_point_update(data_point=point, raw_value="Migraine", actor=coordinator, reason="transcription error")
    point.refresh_from_db()
    assert (point.sdv_state, point.raw_value, point.version) == ("to_verify", "Migraine", 2)
    latest = point.history.first()
    assert (latest.history_user, latest.history_change_reason, latest.sdv_state) == (
        coordinator, "transcription error", "to_verify")
    assert SdvSelection.objects.filter(data_point=point).exists()  # still in the plan


# --- API and pages ---------------------------------------------------------------------------------
def _team(study, sites):
    from studies.models import Role
    from studies.services import cra_site_assign, membership_grant

    users = {role: UserFactory(username=role) for role in ("dm", "sc", "cra", "auditor")}
    membership_grant(user=users["dm"], study=study, role=Role.DATA_MANAGER)
    membership_grant(user=users["auditor"], study=study, role=Role.AUDITOR)
    membership_grant(user=users["sc"], study=study, role=Role.SITE_COORDINATOR, site=sites[0])
    membership_grant(user=users["cra"], study=study, role=Role.CRA)
    cra_site_assign(cra=users["cra"], site=sites[3])
    return users


def _client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_api_lists_results_per_group_and_hides_other_sites(world):
    study, sites = world
    kri_snapshot_compute(study=study, snapshot_date=DAY, actor=UserFactory(username="rbm"))
    users = _team(study, sites)
    client = _client(users["dm"])
    rows = client.get("/api/v1/kri-results/", {"study": study.pk, "kri": "kri0001", "snapshot": "2025-06-01"}).json()
    assert rows["count"] == 10
    assert {"group", "numerator", "denominator", "metric", "score", "flag", "snapshot"} <= set(rows["results"][0])
    site_104 = next(r for r in rows["results"] if r["group"] == "104")
    assert (site_104["numerator"], site_104["denominator"], site_104["flag"]) == (12, 500, 1)
    country = client.get("/api/v1/kri-results/", {"study": study.pk, "kri": "cou0001", "level": "country"}).json()
    assert [r["group"] for r in country["results"]] == ["FR"]
    twin = client.get("/api/v1/kri-results/", {"study": study.pk, "kri": "kri0001", "level": "country"}).json()
    assert [(r["kri"], r["group"], r["numerator"]) for r in twin["results"]] == [("cou0001", "FR", 25)]
    risk = client.get("/api/v1/site-risk/", {"study": study.pk}).json()
    assert risk["count"] == 10 and risk["results"][0]["site_number"] == "104" and risk["results"][0]["explanation"]
    assert {"risk_score", "tier", "explanation"} <= set(risk["results"][0])
    snapshots = client.get("/api/v1/kri-snapshots/", {"study": study.pk}).json()["results"]
    assert snapshots[0]["snapshot_date"] == "2025-06-01" and {q["kri"] for q in snapshots[0]["qtl"]} == {
        "qtl0004", "qtl0006"}
    # Site staff read no risk at all: not their own site's (pooled study rates, its SDV selection),
    # not the study's QTLs; as on the pages, which answer them 404
    coordinator = _client(users["sc"])
    for path in ("kri-results", "site-risk", "sdv-plans", "kri-snapshots"):
        assert coordinator.get(f"/api/v1/{path}/", {"study": study.pk}).json()["count"] == 0, path
    own = SiteRiskAssessment.objects.get(site=sites[0])
    assert coordinator.get(f"/api/v1/site-risk/{own.pk}/").status_code == 404
    cra = _client(users["cra"])  # a CRA reads the sites granted to them
    granted = cra.get("/api/v1/kri-results/", {"study": study.pk, "kri": "kri0001"}).json()["results"]
    assert [r["group"] for r in granted] == ["104"]
    assert [r["site_number"] for r in cra.get("/api/v1/site-risk/", {"study": study.pk}).json()["results"]] == ["104"]


def test_the_api_gives_a_sites_history_and_the_flags_that_changed(world):
    study, sites = world
    actor = UserFactory(username="rbm")
    kri_snapshot_compute(study=study, snapshot_date=DAY, actor=actor)
    kri_snapshot_compute(study=study, snapshot_date=DAY + datetime.timedelta(days=30), actor=actor)
    client = _client(_team(study, sites)["dm"])
    history = client.get("/api/v1/kri-results/", {"study": study.pk, "kri": "kri0001", "site": sites[3].pk,
                                                  "history": "true"}).json()["results"]
    assert [(r["snapshot"], r["consecutive_flagged"]) for r in history] == [("2025-06-01", 1), ("2025-07-01", 2)]
    in_a_row = client.get("/api/v1/kri-results/", {"study": study.pk, "consecutive_min": 2}).json()["results"]
    assert ("kri0001", "104") in {(r["kri"], r["group"]) for r in in_a_row}
    assert client.get("/api/v1/kri-results/", {"study": study.pk, "changed": "true"}).json()["count"] == 0


def test_a_data_manager_changes_a_definition_with_a_reason_and_others_may_not(world):
    study, sites = world
    kri_definitions_seed(study=study, actor=UserFactory(username="rbm"))
    users = _team(study, sites)
    definition = KriDefinition.objects.get(study=study, kri_id="kri0001")
    url = f"/api/v1/kri-definitions/{definition.pk}/"
    changed = _client(users["dm"]).patch(url, {"thresholds": [-3, -2, 2, 3], "reason": "protocol amendment 2"},
                                         format="json")
    assert changed.status_code == 200 and changed.json()["version"] == 2
    newest = definition.history.first()
    assert (newest.history_user, newest.history_change_reason, newest.thresholds) == (
        users["dm"], "protocol amendment 2", [-3, -2, 2, 3])
    bad = _client(users["dm"]).patch(url, {"numerator": {"source": "visits"}, "reason": "try"}, format="json")
    assert bad.status_code == 400 and "unknown source 'visits'" in bad.json()["message"]
    assert _client(users["dm"]).patch(url, {"active": False}, format="json").status_code == 400  # no reason
    assert _client(users["auditor"]).patch(url, {"active": False, "reason": "no"}, format="json").status_code == 403
    assert _client(users["sc"]).patch(url, {"active": False, "reason": "no"}, format="json").status_code == 403
    definition.refresh_from_db()
    assert definition.version == 2 and definition.active


def test_the_risk_configuration_is_read_and_changed_with_a_reason(world):
    study, sites = world
    users = _team(study, sites)
    url = f"/api/v1/risk-config/?study={study.pk}"
    defaults = _client(users["dm"]).get(url).json()
    assert defaults["qtls"][0] == {"kri": "qtl0004", "limit": 0.01} and defaults["version"] == 1
    assert {"kind": "item", "oid": "AE.AESER", "why": "serious adverse events"} in defaults["critical_rules"]
    changed = _client(users["dm"]).patch(url, {"sdv_share": {"low": 0.05}, "reason": "lower burden"}, format="json")
    assert changed.status_code == 200 and changed.json()["sdv_share"] == {"low": 0.05}
    refused = _client(users["dm"]).patch(url, {"sdv_share": {"low": 2}, "reason": "oops"}, format="json")
    assert refused.status_code == 400 and "sdv_share" in refused.json()["extra"]["fields"]
    assert _client(users["auditor"]).patch(url, {"high_from": 5, "reason": "no"}, format="json").status_code == 403
    assert _client(users["sc"]).get(url).status_code == 404
    config = study.risk_config
    assert config.sdv_share == {"low": 0.05} and config.history.first().history_change_reason == "lower burden"


def test_the_dashboard_shows_the_heatmap_a_funnel_and_a_sites_page(world, client):
    study, sites = world
    kri_snapshot_compute(study=study, snapshot_date=DAY, actor=UserFactory(username="rbm"))
    users = _team(study, sites)
    client.force_login(users["dm"])
    page = client.get(f"/studies/{study.pk}/risk/", {"kri": "kri0001"})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="heatmap"' in html and html.count(f'href="/studies/{study.pk}/risk/sites/') >= 10
    assert "vendor/chartjs/chart.umd.min.js" in html and "cdn" not in html.lower()
    funnel = page.context["funnel"]
    assert len(funnel["points"]) == 10 and [b["z"] for b in funnel["bounds"]] == [-3, -2, 0, 2, 3]
    assert funnel["bounds"][2]["points"][0]["y"] == pytest.approx(25 / 5000)  # the expected metric, p
    assert [row["assessment"].site.number for row in page.context["heatmap"]][0] == "104"
    site_page = client.get(f"/studies/{study.pk}/risk/sites/{sites[3].pk}/")
    assert site_page.status_code == 200 and b"Site 104: " in site_page.content
    assert b'id="kri-history"' in site_page.content and b'id="site-chart-data"' in site_page.content
    client.force_login(users["cra"])  # granted site 104 only
    heatmap = client.get(f"/studies/{study.pk}/risk/").context["heatmap"]
    assert [row["assessment"].site.number for row in heatmap] == ["104"]
    assert client.get(f"/studies/{study.pk}/risk/sites/{sites[0].pk}/").status_code == 404
    client.force_login(users["sc"])
    assert client.get(f"/studies/{study.pk}/risk/").status_code == 404


def test_without_a_study_each_study_answers_with_its_own_latest_snapshot(world):
    study, _ = world
    other, _ = build_world("RBM-2")
    actor = UserFactory(username="rbm")
    kri_snapshot_compute(study=study, snapshot_date=DAY, actor=actor)
    kri_snapshot_compute(study=other, snapshot_date=DAY + datetime.timedelta(days=30), actor=actor)
    client = _client(UserFactory(username="root", is_superuser=True))

    rows = client.get("/api/v1/site-risk/", {"page_size": 100}).json()["results"]

    assert sorted({(r["study"], r["snapshot"]) for r in rows}) == sorted(
        [(study.pk, "2025-06-01"), (other.pk, "2025-07-01")])
