"""PatternRecognition's pass: read the study (deviations.detectors.data), run the plan's detectors,
and reconcile what they found with the stored detected deviations, set-based and audited:
- a finding whose evidence key is new becomes a deviation, coded (SDTM DV vocabulary) and with the
  plan's importance; written by COPY on PostgreSQL, history rows included;
- a finding already stored changes nothing, unless its evidence changed (then the deviation is
  updated, audited); a person's coding or importance is never overwritten;
- a stored open deviation whose detector ran and no longer finds it is closed as withdrawn with
  the reason, and reopened if the data breaks the rule again; one a person closed or reopened
  (status_by_person) is neither reopened nor closed by the detector.
Deviations of a detector the plan switches off are left as they are."""

import json
import time

import pandas as pd
from django.db import transaction
from django.utils import timezone

from deviations.coding import code
from deviations.detectors import detectors, enabled
from deviations.detectors.data import study_data
from deviations.models import DetectionPass, Deviation, DeviationPlan
from deviations.plan import importance_of, plan_latest
from studies.audit import audited_bulk_create, audited_bulk_update, audited_copy_create
from studies.ingest.copy import is_postgresql
from studies.models import Study

COMPARED = ("rule", "description", "occurred_on", "visit_id", "evidence", "epoch")


class NoPlan(LookupError):
    """The study has no deviation plan: nothing to detect against."""


def epochs(findings: pd.DataFrame, data) -> pd.Series:
    """SDTM EPOCH of each finding's date: before the first dose SCREENING, up to the last dose
    TREATMENT, after it FOLLOW-UP; unknown without a date."""
    when = pd.to_datetime(findings["occurred_on"])
    first = findings["subject"].map(data.subjects["first_dose"])
    ends = data.treatment_end()
    last = (pd.to_datetime(findings["subject"].map(ends)) if not ends.empty
            else pd.Series(pd.NaT, index=findings.index, dtype="datetime64[ns]"))
    epoch = pd.Series("TREATMENT", index=findings.index)
    epoch = epoch.where(~(first.isna() | (when < first)), "SCREENING")
    epoch = epoch.where(~(last.notna() & (when > last)), "FOLLOW-UP")
    return epoch.where(when.notna(), "")


def _findings(plan: DeviationPlan, data) -> tuple[pd.DataFrame, list[str], dict]:
    content, parts, ran, counts = plan.content, [], [], {}
    for category, detect in detectors().items():
        if not enabled(content, category):
            continue
        found = detect(content, data)
        ran.append(category)
        counts[category] = {"found": int(len(found))}
        parts.append(found.assign(category=category))
    findings = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if findings.empty:
        return findings, ran, counts
    today = pd.Timestamp(timezone.now().date())
    occurred = pd.to_datetime(findings["occurred_on"]).clip(upper=today)
    findings["occurred_on"] = occurred.dt.date.astype(object).where(occurred.notna(), None)
    findings["epoch"] = epochs(findings, data)
    findings["site"] = findings["subject"].map(data.subjects["site"])
    findings["visit"] = pd.array(findings["visit"], dtype="Int64")
    codes = {(c, r): code(c, r) for c, r in set(zip(findings["category"], findings["rule"], strict=True))}
    for name in ("dvcat", "dvdecod", "dvterm"):
        findings[name] = [codes[(c, r)][name] for c, r in zip(findings["category"], findings["rule"], strict=True)]
    findings["importance"] = findings["category"].map(lambda c: importance_of(content, c))
    return findings, ran, counts


def detection_run(*, study: Study, actor, plan: DeviationPlan | None = None) -> DetectionPass:
    """One pass of the study's plan (the latest version unless given). Raises NoPlan without one."""
    plan = plan or plan_latest(study=study)
    if plan is None:
        raise NoPlan(f"{study.protocol_id} has no deviation plan (import one with import_deviation_plan)")
    started = time.perf_counter()
    record = DetectionPass(study=study, plan=plan)
    data = study_data(study=study, plan=plan.content)
    findings, ran, counts = _findings(plan, data)
    with transaction.atomic():
        Study.objects.select_for_update().get(pk=study.pk)  # one pass of a study at a time
        changes = _reconcile(study=study, plan=plan, findings=findings, ran=ran, actor=actor)
        for category in ran:
            counts[category].update(changes.get(category, {}))
        record.counts = {"detectors": counts, "not_run": [c for c in detectors() if c not in ran],
                         "notes": data.notes, "plan_version": plan.version,
                         "totals": {k: sum(c.get(k, 0) for c in counts.values())
                                    for k in ("found", "created", "updated", "closed", "reopened",
                                                                      "already_reported")}}
        record.finished_at = timezone.now()
        record.seconds = round(time.perf_counter() - started, 3)
        record.save()
    return record


def _stored(study: Study, categories: list[str]) -> pd.DataFrame:
    columns = ["pk", "evidence_key", "category", "status", "resolution", "status_by_person", "coding_by_person",
               "importance_by_person",
               "dvcat", "dvdecod", "dvterm", "importance", *COMPARED]
    rows = (Deviation.objects.filter(study=study, source=Deviation.Source.DETECTED, category__in=categories)
            .exclude(evidence_key="").values_list(*columns))
    return pd.DataFrame.from_records(list(rows), columns=columns)


def _reconcile(*, study, plan, findings: pd.DataFrame, ran: list[str], actor) -> dict:
    stored = _stored(study, ran)
    keys = set(findings["key"]) if not findings.empty else set()
    known = dict(zip(stored["evidence_key"], stored.index, strict=True)) if not stored.empty else {}
    counts: dict[str, dict] = {c: {"created": 0, "updated": 0, "closed": 0, "reopened": 0} for c in ran}
    new = findings[~findings["key"].isin(list(known))] if not findings.empty else findings
    new, already = _not_yet_reported(study, new)
    for category, n in already.items():
        counts[category]["already_reported"] = n
    _create(study, plan, new, actor)
    for category, n in (new["category"].value_counts().items() if not new.empty else []):
        counts[category]["created"] = int(n)
    today = timezone.now().date()
    updated, reopened, closed = [], [], []
    by_pk = {}
    if not findings.empty and not stored.empty:
        seen = findings[findings["key"].isin(list(known))]
        by_key = stored.set_index("evidence_key").to_dict("index")
        for f in seen.to_dict("records"):
            row = by_key[f["key"]]
            want = {"rule": f["rule"], "description": f["description"], "occurred_on": f["occurred_on"],
                    "visit_id": None if pd.isna(f["visit"]) else int(f["visit"]), "evidence": f["evidence"],
                    "epoch": f["epoch"]}
            if not row["coding_by_person"]:
                want |= {"dvcat": f["dvcat"], "dvdecod": f["dvdecod"], "dvterm": f["dvterm"]}
            if not row["importance_by_person"]:
                want["importance"] = f["importance"]
            changed = {k: v for k, v in want.items() if _differs(row[k], v)}
            if row["resolution"] == Deviation.Resolution.WITHDRAWN and not row["status_by_person"]:
                changed |= {"status": Deviation.Status.OPEN, "resolution": "", "closed_on": None}
                reopened.append((int(row["pk"]), changed, f["category"]))
            elif changed:
                updated.append((int(row["pk"]), changed, f["category"]))
    if not stored.empty:
        gone = stored[~stored["evidence_key"].isin(list(keys))
                      & stored["status"].isin([Deviation.Status.OPEN, Deviation.Status.UNDER_REVIEW])
                      & ~stored["status_by_person"].astype(bool)]
        closed = [(int(pk), {"status": Deviation.Status.CLOSED, "resolution": Deviation.Resolution.WITHDRAWN,
                             "closed_on": today}, category) for pk, category in zip(gone["pk"], gone["category"],
                                                                                    strict=True)]
    for label, group, reason in (
            ("updated", updated, f"PatternRecognition (plan v{plan.version}): the evidence changed"),
            ("reopened", reopened, f"PatternRecognition (plan v{plan.version}): the data breaks the rule again"),
            ("closed", closed, f"PatternRecognition (plan v{plan.version}): the data no longer breaks the rule")):
        if not group:
            continue
        by_pk = Deviation.objects.in_bulk([pk for pk, _, _ in group])
        fields = set()
        for pk, changed, category in group:
            for name, value in changed.items():
                setattr(by_pk[pk], name, value)
            fields |= set(changed)
            counts[category][label] += 1
        audited_bulk_update(list(by_pk.values()), sorted(fields), actor=actor, reason=reason)
    return counts


SAME_EVENT_DAYS = 7


def _not_yet_reported(study, new: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The new findings less those a person reported or a source system gave already: the same
    subject and category, on the same visit or within SAME_EVENT_DAYS days (one event, not two
    deviations). Such a finding is counted, not stored, every pass: it writes nothing."""
    if new.empty:
        return new, {}
    rows = (Deviation.objects.filter(study=study, subject_id__in=set(new["subject"].astype(int)))
            .exclude(source=Deviation.Source.DETECTED).exclude(resolution=Deviation.Resolution.WITHDRAWN)
            .values_list("subject_id", "category", "visit_id", "occurred_on"))
    reported = pd.DataFrame.from_records(list(rows), columns=["subject", "category", "visit_r", "date_r"])
    if reported.empty:
        return new, {}
    pairs = new.reset_index().merge(reported, on=["subject", "category"])
    when, other = pd.to_datetime(pairs["occurred_on"]), pd.to_datetime(pairs["date_r"])
    same_visit = pairs["visit"].notna() & (pairs["visit"].astype("Float64") == pairs["visit_r"].astype("Float64"))
    close = (when - other).abs().dt.days <= SAME_EVENT_DAYS
    duplicate = set(pairs.loc[(same_visit.fillna(False) | close.fillna(False)).astype(bool), "index"])
    counts = new.loc[list(duplicate), "category"].value_counts().to_dict() if duplicate else {}
    return new.drop(index=list(duplicate)), {k: int(v) for k, v in counts.items()}


def _differs(stored, wanted) -> bool:
    if isinstance(wanted, dict) or isinstance(stored, dict):
        return json.dumps(stored, sort_keys=True, default=str) != json.dumps(wanted, sort_keys=True, default=str)
    if (stored is None or (not isinstance(stored, str) and pd.isna(stored))) and wanted is None:
        return False
    return stored != wanted


def _create(study, plan, new: pd.DataFrame, actor) -> None:
    if new.empty:
        return
    today = timezone.now().date()
    reason = f"Detected by PatternRecognition (plan v{plan.version})"
    frame = pd.DataFrame({
        "study_id": study.pk, "site_id": new["site"].astype("int64").to_numpy(),
        "subject_id": new["subject"].astype("int64").to_numpy(), "visit_id": new["visit"].to_numpy(),
        "category": new["category"].to_numpy(), "term": "", "dvcat": new["dvcat"].to_numpy(),
        "dvdecod": new["dvdecod"].to_numpy(), "dvterm": new["dvterm"].to_numpy(), "coding_by_person": False,
        "importance": new["importance"].to_numpy(), "importance_by_person": False, "status": Deviation.Status.OPEN,
        "resolution": "", "status_by_person": False,
        "source": Deviation.Source.DETECTED, "description": new["description"].to_numpy(),
        "occurred_on": new["occurred_on"].to_numpy(), "detected_on": today, "closed_on": None,
        "epoch": new["epoch"].to_numpy(), "external_id": "", "rule": new["rule"].to_numpy(),
        "evidence_key": new["key"].to_numpy(), "plan_id": plan.pk, "root_cause": "",
        "created_at": timezone.now()})
    if is_postgresql():
        frame["visit_id"] = pd.array(new["visit"].to_numpy(), dtype="Int64")
        frame["occurred_on"] = pd.to_datetime(frame["occurred_on"]).dt.date.astype(object).where(
            frame["occurred_on"].notna(), None)
        frame["evidence"] = [json.dumps(e, default=str) for e in new["evidence"]]
        frame["reported_by_id"] = pd.array([None] * len(frame), dtype="Int64")
        frame["root_cause_analysis_id"] = pd.array([None] * len(frame), dtype="Int64")
        audited_copy_create(Deviation, list(frame.columns), frame, actor=actor, reason=reason)
        return
    objects = [Deviation(**{k: (None if k == "visit_id" and pd.isna(v) else v) for k, v in row.items()},
                         evidence=evidence)
               for row, evidence in zip(frame.to_dict("records"), new["evidence"], strict=True)]
    audited_bulk_create(objects, actor=actor, reason=reason)
