"""Risk-based SDV plans: per site, from its latest tier, 100% of critical data, every data point of
the site's first N subjects, and a share of the rest sized by the tier. Every assessment re-plans
every site: a changed tier resizes the plan, and data entered since the last plan is drawn the same
stable way (a plan is stored again only when it changed).

Sampling is stable: a data point is sampled when a hash of (study, data point id) falls below the
tier's share, so the same point is drawn every time, a larger share only adds points, and a
selection once made is never withdrawn (a lower tier later keeps what was selected). The reasons
are recorded per selected data point and per plan.
"""

import numpy as np
import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from sdv.kri_inputs import queryset_frame
from sdv.models import SdvPlan, SdvSelection, SiteRiskAssessment
from sdv.services import risk_config_get
from studies.audit import audited_bulk_create, audited_bulk_update, audited_copy_create, set_audit
from studies.models import DataPoint, ItemDefinition, Site, Study, Subject

BUCKETS = 10_000


def stable_draw(study_id: int, ids: np.ndarray) -> np.ndarray:
    """A number in [0, 1) per data point id, the same on every run and machine (not Python's salted
    hash): the splitmix64 mix of (study, id), vectorised over all ids."""
    with np.errstate(over="ignore"):  # the mix wraps around 2**64 on purpose
        x = np.asarray(ids, dtype=np.uint64) + np.uint64(study_id) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(BUCKETS)).astype("float64") / BUCKETS


def critical_items(*, study: Study, rules: list[dict]) -> set[int]:
    """Items that are critical: marked so in the metadata, or matched by one of the study's rules
    ({"kind": "form", "oid": "IC"}, {"kind": "item", "oid": "AE.AESER"}, {"kind": "label", "contains":
    "primary endpoint"})."""
    items = ItemDefinition.objects.filter(study=study)
    critical = set(items.filter(critical=True).values_list("pk", flat=True))
    for rule in rules or []:
        kind = rule.get("kind")
        if kind == "form":
            critical |= set(items.filter(form__oid=rule["oid"]).values_list("pk", flat=True))
        elif kind == "item":
            critical |= set(items.filter(oid=rule["oid"]).values_list("pk", flat=True))
        elif kind == "label":
            critical |= set(items.filter(label__icontains=rule["contains"]).values_list("pk", flat=True))
    return critical


def _first_subjects(subjects: pd.DataFrame, n: int) -> set[int]:
    """Each site's first N enrolled subjects (by enrolment date, then subject id)."""
    if subjects.empty or n == 0:
        return set()
    ordered = subjects.sort_values(["enrolment_date", "subject_id"], na_position="last", kind="stable")
    return set(ordered.groupby("site").head(n)["pk"])


def _plan_inputs(*, study: Study, site: Site | None = None) -> dict:
    """What planning reads, for the whole study (one query per table, then split by site in
    memory: one scan of the data points rather than one join per site) or for one site."""
    points = DataPoint.objects.filter(study=study) if site is None else DataPoint.objects.filter(subject__site=site)
    subjects = Subject.objects.filter(study=study).exclude(status__in=[Subject.Status.SCREEN_FAILED,
                                                                       Subject.Status.SCREENING])
    selections = SdvSelection.objects.filter(study=study)
    tiers = SiteRiskAssessment.objects.filter(site__study=study)
    if site is not None:
        subjects, selections, tiers = subjects.filter(site=site), selections.filter(site=site), tiers.filter(site=site)
    latest = {}
    for site_id, tier in tiers.order_by("site_id", "-snapshot__snapshot_date").values_list("site_id", "tier"):
        latest.setdefault(site_id, tier)
    return {
        "points": queryset_frame(points.order_by().values_list("pk", "subject_id", "item_id", "sdv_state",
                                                                "subject__site_id"),
                                 ["pk", "subject", "item", "sdv_state", "site"]),
        "subjects": pd.DataFrame.from_records(
            list(subjects.values_list("pk", "site_id", "enrolment_date", "subject_id")),
            columns=["pk", "site", "enrolment_date", "subject_id"]),
        "already": set(selections.values_list("data_point_id", flat=True)),
        "tiers": latest,
    }


@transaction.atomic
def sdv_plan_update(*, site: Site, actor, reason: str) -> SdvPlan:
    """(Re)plan one site from its latest tier; returns its plan."""
    config = risk_config_get(study=site.study)
    critical = critical_items(study=site.study, rules=config.critical_rules)
    return _plan(site, _plan_inputs(study=site.study, site=site), config=config, critical=critical, actor=actor,
                 reason=reason)


def sdv_plans_update(*, study: Study, sites, actor, reason: str) -> list[SdvPlan]:
    """(Re)plan each of `sites`; returns the plans that changed (a new tier or sizing, or data
    points entered since the last plan: a new subject or visit is planned like the first ones)."""
    config = risk_config_get(study=study)
    critical = critical_items(study=study, rules=config.critical_rules)
    inputs = _plan_inputs(study=study)
    started = timezone.now()
    plans = []
    for site in sites:
        with transaction.atomic():  # one site at a time: a long first plan does not hold every site
            plans.append(_plan(site, inputs, config=config, critical=critical, actor=actor, reason=reason))
    return [plan for plan in plans if plan.updated_at >= started]


def _plan(site: Site, inputs: dict, *, config, critical: set[int], actor, reason: str) -> SdvPlan:
    tier = inputs["tiers"].get(site.pk, SiteRiskAssessment.Tier.HIGH)  # unassessed: the most cautious plan
    share = config.share(tier)
    points = inputs["points"][inputs["points"]["site"] == site.pk]
    first = _first_subjects(inputs["subjects"][inputs["subjects"]["site"] == site.pk], config.first_subjects_fully)
    sampled = stable_draw(site.study_id, points["pk"].to_numpy()) < share
    reason_of = np.select([points["item"].isin(critical).to_numpy(), points["subject"].isin(first).to_numpy(),
                           sampled],
                          [SdvSelection.Reason.CRITICAL, SdvSelection.Reason.FIRST_SUBJECTS,
                           SdvSelection.Reason.SAMPLED], default="")
    chosen = points.assign(reason=reason_of)
    chosen = chosen[chosen["reason"] != ""]
    new = chosen[~chosen["pk"].isin(inputs["already"])]
    plan = SdvPlan.objects.filter(site=site).first() or SdvPlan(site=site)
    same = plan.pk is not None and (plan.tier, plan.share, plan.first_subjects) == (
        tier, share, config.first_subjects_fully)
    if same and new.empty:
        return plan  # nothing new to verify and the same sizing: no new plan version
    if same:
        why = f"{reason}: {len(new)} new data point(s) selected at {tier} risk"
    else:
        why = (f"{reason}: {tier} risk ({'first plan' if plan.pk is None else f'was {plan.tier}'}; "
               f"{share:.0%} sampled, first {config.first_subjects_fully} subject(s) fully, critical data 100%)")
    now = timezone.now()
    _selections_create(site, new.assign(tier=tier, selected_at=now), actor=actor, reason=why)
    to_verify = new[new["sdv_state"] == DataPoint.SdvState.NOT_REQUIRED]["pk"].tolist()
    _mark_to_verify(to_verify, actor=actor, reason=f"Selected for SDV: {why}")
    already = int(points["pk"].isin(inputs["already"]).sum())
    counts = {"data_points": len(points), "selected": already + len(new), "added": len(new),
              **{str(k): int(v) for k, v in chosen["reason"].value_counts().items()}}
    plan.tier, plan.share, plan.first_subjects = tier, share, config.first_subjects_fully
    plan.counts, plan.reason, plan.updated_at = counts, why, now
    set_audit(plan, actor=actor, reason=why)
    plan.save()
    return plan


def _selections_create(site: Site, new: pd.DataFrame, *, actor, reason: str) -> None:
    if new.empty:
        return
    columns = ["study_id", "site_id", "data_point_id", "reason", "tier", "selected_at"]
    rows = new.rename(columns={"pk": "data_point_id"}).assign(study_id=site.study_id, site_id=site.pk)[columns]
    if connection.vendor == "postgresql":  # COPY, with history rows by COPY too (large first plans)
        audited_copy_create(SdvSelection, columns, rows, actor=actor, reason=reason)
    else:
        audited_bulk_create([SdvSelection(**row) for row in rows.to_dict("records")], actor=actor, reason=reason,
                            batch_size=2000)


def _mark_to_verify(ids: list[int], *, actor, reason: str) -> None:
    for start in range(0, len(ids), 5000):
        points = list(DataPoint.objects.filter(pk__in=ids[start:start + 5000]))
        for point in points:
            point.sdv_state = DataPoint.SdvState.TO_VERIFY
        audited_bulk_update(points, ["sdv_state"], actor=actor, reason=reason)
