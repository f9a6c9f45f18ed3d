"""The generated study of `bench_deviations`: sites x subjects with a visit schedule, exposure,
concomitant medications, adverse events and I/E records, written set-based (COPY on PostgreSQL,
history rows included), with deviations of every kind planted and decoys beside them that look
alike but are in order. Every subject has one role (clean, a planted deviation, or a decoy), so
the expected evidence keys are known exactly. Vectorised with numpy: no per-subject loop."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from studies.audit import audited_bulk_create, audited_copy_create
from studies.ingest.copy import is_postgresql
from studies.models import (
    DataPoint,
    FormDefinition,
    ItemDefinition,
    Site,
    Study,
    Subject,
    SubjectVisit,
    VisitDefinition,
)

PLAN = {
    "visits": {"SCREENING": {"day": -14, "before": 7, "after": 0}, "DAY 1": {"day": 1},
               "WEEK 2": {"day": 15, "before": 2, "after": 2}, "WEEK 4": {"day": 29, "before": 3, "after": 3},
               "WEEK 8": {"day": 57, "before": 3, "after": 3}, "WEEK 12": {"day": 85, "before": 5, "after": 5}},
    "consent": {"before_first_visit": True, "before_first_dose": True},
    "dosing": {"arms": {"PBO": {"doses": [0], "units": "mg"}, "LO": {"doses": [20], "units": "mg"},
                        "HI": {"doses": [40, 20], "units": "mg"}}},
    "prohibited_medications": [{"name": "RIFAMPICIN", "washout_days": 14}, {"name": "KETOCONAZOLE", "washout_days": 7}],
    "eligibility": {"criteria_not_met_is_deviation": True},
    "safety": {"report_within_days": 1},
}
VISITS = list(PLAN["visits"])
FIRST_DOSE = {"PBO": 0, "LO": 20, "HI": 40}
SECOND_DOSE = {"PBO": 0, "LO": 20, "HI": 20}  # HI's allowed reduction: a decoy for the dosing detector
# role -> share of the enrolled subjects; "clean" takes the rest
PLANTED = ("consent_late", "consent_missing", "out_of_window", "missed_visit", "wrong_dose", "prohibited_washout",
           "prohibited_on_treatment", "prohibited_by_term", "ineligible", "sae_late")
DECOYS = ("consent_same_day", "window_edge", "discontinued_early", "prohibited_stopped_at_washout",
          "similar_drug_name", "prohibited_after_treatment", "sae_on_time", "non_serious_late")
SHARE = 0.004
SCREEN_FAIL_SHARE = 0.03
REASON = "bench_deviations: generated study"


@dataclass
class Generated:
    study: Study
    expected: dict[str, set] = field(default_factory=dict)  # kind -> evidence keys
    decoys: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _write(model, frame: pd.DataFrame, actor) -> np.ndarray:
    """Audited set-based create; returns the new primary keys in row order."""
    if is_postgresql():
        return np.asarray(audited_copy_create(model, list(frame.columns), frame, actor=actor, reason=REASON))
    objects = [model(**{k: (None if (not isinstance(v, str) and pd.isna(v)) else v) for k, v in row.items()})
               for row in frame.to_dict("records")]
    audited_bulk_create(objects, actor=actor, reason=REASON, batch_size=500)
    return np.asarray([o.pk for o in objects])


def _dates(values) -> pd.Series:
    return pd.Series(pd.to_datetime(values)).dt.date


def generate(*, sites: int, subjects_per_site: int, seed: int, actor) -> Generated:
    rng = np.random.default_rng(seed)
    study = Study(protocol_id=f"BENCH-DEV-{seed}-{sites}x{subjects_per_site}", name="bench_deviations study")
    study._history_user, study._change_reason = actor, REASON
    study.save()
    out = Generated(study=study)
    site_ids = _write(Site, pd.DataFrame({"study_id": study.pk, "number": [f"{n:04d}" for n in range(1, sites + 1)],
                                          "name": [f"Site {n}" for n in range(1, sites + 1)], "country": "US",
                                          "city": "", "timezone": "UTC", "language": "en"}), actor)
    n = sites * subjects_per_site
    failed = rng.random(n) < SCREEN_FAIL_SHARE
    roles = np.full(n, "clean", dtype=object)
    kinds = (*PLANTED, *DECOYS)
    draw = rng.random(n)
    for i, kind in enumerate(kinds):  # each role a SHARE of the subjects, disjoint, never a screen failure
        roles[(draw >= i * SHARE) & (draw < (i + 1) * SHARE) & ~failed] = kind
    arm = rng.choice(["PBO", "LO", "HI"], size=n)
    arm[roles == "wrong_dose"] = rng.choice(["PBO", "LO"], size=int((roles == "wrong_dose").sum()))
    first_dose = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D")
    screening = first_dose - pd.to_timedelta(14 + rng.integers(0, 8, n), unit="D")
    consent = screening - pd.to_timedelta(rng.integers(0, 6, n), unit="D")
    consent = consent.where(roles != "consent_late", screening + pd.to_timedelta(rng.integers(1, 4, n), unit="D"))
    consent = consent.where(roles != "consent_same_day", screening)
    consent = pd.Series(consent).where(roles != "consent_missing")
    subjects = pd.DataFrame({
        "study_id": study.pk, "site_id": np.repeat(site_ids, subjects_per_site),
        "subject_id": [f"{s + 1:04d}-{i + 1:03d}" for s in range(sites) for i in range(subjects_per_site)],
        "status": np.where(failed, "screen_failed", "enrolled"), "consent_date": _dates(consent),
        "enrolment_date": _dates(pd.Series(first_dose).where(~failed)),
        "first_dose_date": _dates(pd.Series(first_dose).where(~failed)), "arm": np.where(failed, "", arm)})
    subject_ids = _write(Subject, subjects, actor)
    out.counts["subjects"] = n
    _expect(out, "informed_consent", [f"informed_consent:{s}" for s in subject_ids[
        np.isin(roles, ["consent_late", "consent_missing"])]])
    definitions = {}
    for order, name in enumerate([*VISITS, "LOG"]):
        spec = PLAN["visits"].get(name, {})
        definition = VisitDefinition(study=study, oid=name.replace(" ", ""), name=name, order=order,
                                     planned_day=spec.get("day"), window_before=spec.get("before", 0),
                                     window_after=spec.get("after", 0), repeating=name == "LOG")
        definition._history_user, definition._change_reason = actor, REASON
        definition.save()
        definitions[name] = definition.pk
    log_visits = _visits(out, rng, subject_ids, roles, failed, first_dose, screening, definitions, actor)
    forms, items = _metadata(study, actor)
    _records(out, rng, subject_ids, log_visits, roles, failed, arm, first_dose, forms, items, actor)
    out.decoys = {kind: int((roles == kind).sum()) for kind in DECOYS}
    out.decoys["screen_failure_with_unmet_criterion"] = int(failed.sum())
    out.decoys["allowed_reduced_dose"] = int(((arm == "HI") & ~failed).sum())
    return out


def _expect(out: Generated, kind: str, keys) -> None:
    out.expected.setdefault(kind, set()).update(keys)


def _visits(out, rng, subject_ids, roles, failed, first_dose, screening, definitions, actor) -> np.ndarray:
    rows = [pd.DataFrame({"subject_id": subject_ids, "definition_id": definitions["SCREENING"],
                          "actual_date": _dates(screening), "name": "SCREENING"})]
    enrolled = ~failed
    shift_at = rng.integers(2, len(VISITS), len(subject_ids))  # the visit a window role moves (WEEK 2 .. 12)
    direction = rng.choice([-1, 1], len(subject_ids))
    for index, name in enumerate(VISITS[1:], start=1):
        spec = PLAN["visits"][name]
        before, after = spec.get("before", 0), spec.get("after", 0)
        offset = rng.integers(-before, after + 1, len(subject_ids))
        moved = (shift_at == index)
        beyond = np.where(direction > 0, after + rng.integers(1, 5, len(subject_ids)),
                          -(before + rng.integers(1, 5, len(subject_ids))))
        edge = np.where(direction > 0, after, -before)
        offset = np.where(moved & (roles == "out_of_window"), beyond, offset)
        offset = np.where(moved & (roles == "window_edge"), edge, offset)
        keep = enrolled.copy()
        if name == "WEEK 4":
            keep &= roles != "missed_visit"
        if name in ("WEEK 8", "WEEK 12"):
            keep &= roles != "discontinued_early"
        day = first_dose + pd.to_timedelta(spec["day"] - 1 + offset, unit="D")
        rows.append(pd.DataFrame({"subject_id": subject_ids, "definition_id": definitions[name],
                                  "actual_date": _dates(day), "name": name, "moved": moved,
                                  "role": roles})[keep])
    visits = pd.concat(rows, ignore_index=True)
    visits["repeat_key"] = "1"
    visits["study_id"] = out.study.pk
    pks = _write(SubjectVisit, visits[["study_id", "subject_id", "definition_id", "repeat_key", "actual_date"]], actor)
    planted = visits["moved"].fillna(False).astype(bool) & (visits["role"] == "out_of_window")
    _expect(out, "visit_window", [f"visit_window:{pk}" for pk in pks[planted.to_numpy()]])
    _expect(out, "visit_window", [f"visit_missed:{s}:WEEK 4" for s in subject_ids[roles == "missed_visit"]])
    log = pd.DataFrame({"study_id": out.study.pk, "subject_id": subject_ids, "definition_id": definitions["LOG"],
                        "repeat_key": "1", "actual_date": None})
    log_pks = _write(SubjectVisit, log, actor)
    out.counts["visits"] = len(visits) + len(log)
    return log_pks


def _metadata(study, actor) -> tuple[dict, dict]:
    forms, items = {}, {}
    spec = {"EX": ["EXDOSE", "EXSTDTC", "EXENDTC"], "CM": ["CMDECOD", "CMTRT", "CMSTDTC", "CMENDTC"],
            "AE": ["AESER", "AESTDTC"], "IE": ["INCL03", "EXCL01"]}
    for order, (oid, names) in enumerate(spec.items()):
        form = FormDefinition(study=study, oid=oid, name=f"SDTM {oid}", order=order, repeating=True)
        form._history_user, form._change_reason = actor, REASON
        form.save()
        forms[oid] = form.pk
        for position, name in enumerate(names):
            item = ItemDefinition(study=study, form=form, oid=f"{oid}.{name}", label=name, order=position)
            item._history_user, item._change_reason = actor, REASON
            item.save()
            items[f"{oid}.{name}"] = item.pk
    return forms, items


def _points(study, subjects, visits, form, repeat, values: dict, items: dict, entered_at=None) -> pd.DataFrame:
    """Long data-point rows of one record per subject: one row per non-missing item value."""
    parts = []
    for oid, value in values.items():
        part = pd.DataFrame({"subject_id": subjects, "visit_id": visits, "repeat_key": repeat,
                             "item_id": items[oid], "raw_value": value})
        if entered_at is not None:
            part["entered_at"] = entered_at
        parts.append(part[part["raw_value"].notna()])
    frame = pd.concat(parts, ignore_index=True)
    frame["study_id"], frame["form_id"] = study.pk, form
    return frame


def _iso(dates) -> pd.Series:
    return pd.Series(pd.to_datetime(dates)).dt.strftime("%Y-%m-%d")


def _records(out, rng, subject_ids, log_visits, roles, failed, arm, first_dose, forms, items, actor) -> None:
    study, enrolled = out.study, ~failed
    s, v, r, a = subject_ids[enrolled], log_visits[enrolled], roles[enrolled], arm[enrolled]
    d0 = pd.Series(first_dose[enrolled])
    frames = []
    # Exposure: two records each, the arm's starting dose then its maintenance dose (HI reduced to 20)
    second = pd.Series([SECOND_DOSE[x] for x in a])
    wrong = r == "wrong_dose"
    second = second.where(~wrong, pd.Series(np.where(a == "PBO", 40, 30)))
    frames.append(_points(study, s, v, forms["EX"], "1", {
        "EX.EXDOSE": pd.Series([str(FIRST_DOSE[x]) for x in a]), "EX.EXSTDTC": _iso(d0),
        "EX.EXENDTC": _iso(d0 + pd.Timedelta(days=27))}, items))
    frames.append(_points(study, s, v, forms["EX"], "2", {
        "EX.EXDOSE": second.astype(str), "EX.EXSTDTC": _iso(d0 + pd.Timedelta(days=28)),
        "EX.EXENDTC": _iso(d0 + pd.Timedelta(days=84))}, items))
    _expect(out, "ip_dosing", [f"ip_dosing:{x}:{y}:2" for x, y in zip(s[wrong], v[wrong], strict=True)])
    # Concomitant medications: everyone a harmless one; the medication roles a second record
    frames.append(_points(study, s, v, forms["CM"], "1", {
        "CM.CMDECOD": pd.Series("PARACETAMOL", index=range(len(s))),
        "CM.CMSTDTC": _iso(d0 - pd.Timedelta(days=30)), "CM.CMENDTC": pd.Series([None] * len(s))}, items))
    med = pd.DataFrame({"decod": None, "term": None, "start": pd.NaT, "end": pd.NaT}, index=range(len(s)))
    days = pd.to_timedelta(rng.integers(1, 14, len(s)), unit="D")
    cases = {"prohibited_washout": ("RIFAMPICIN", None, d0 - pd.Timedelta(days=40), d0 - days),
             "prohibited_on_treatment": ("KETOCONAZOLE", None, d0 + days, pd.Series(pd.NaT, index=d0.index)),
             "prohibited_by_term": (None, "Rifampicin", d0 + days, d0 + days + pd.Timedelta(days=5)),
             "prohibited_stopped_at_washout": ("RIFAMPICIN", None, d0 - pd.Timedelta(days=40),
                                               d0 - pd.Timedelta(days=14)),
             "similar_drug_name": ("RIFAXIMIN", None, d0 + days, pd.Series(pd.NaT, index=d0.index)),
             "prohibited_after_treatment": ("KETOCONAZOLE", None, d0 + pd.Timedelta(days=90),
                                            d0 + pd.Timedelta(days=95))}
    for role, (decod, term, start, end) in cases.items():
        mask = pd.Series(r == role)
        med.loc[mask, "decod"], med.loc[mask, "term"] = decod, term
        med.loc[mask, "start"], med.loc[mask, "end"] = pd.Series(start)[mask], pd.Series(end)[mask]
    has = (med["decod"].notna() | med["term"].notna()).to_numpy()
    frames.append(_points(study, s[has], v[has], forms["CM"], "2", {
        "CM.CMDECOD": med["decod"][has].reset_index(drop=True), "CM.CMTRT": med["term"][has].reset_index(drop=True),
        "CM.CMSTDTC": _iso(med["start"][has]).where(med["start"][has].notna().to_numpy()).reset_index(drop=True),
        "CM.CMENDTC": _iso(med["end"][has]).where(med["end"][has].notna().to_numpy()).reset_index(drop=True)},
        items))
    prohibited = np.isin(r, ["prohibited_washout", "prohibited_on_treatment", "prohibited_by_term"])
    _expect(out, "prohibited_medication", [f"prohibited_medication:{x}:{y}:2"
                                           for x, y in zip(s[prohibited], v[prohibited], strict=True)])
    # Adverse events: the safety roles, plus a non-serious AE for 5% of the others
    onset = d0 + pd.Timedelta(days=10)
    delay = pd.Series(np.where(r == "sae_late", rng.integers(2, 10, len(s)), np.where(r == "non_serious_late", 20, 1)))
    ae = np.isin(r, ["sae_late", "sae_on_time", "non_serious_late"]) | ((r == "clean") & (rng.random(len(s)) < 0.05))
    serious = np.where(np.isin(r, ["sae_late", "sae_on_time"]), "Y", "N")
    entered = (pd.Series(onset) + pd.to_timedelta(delay, unit="D")).dt.tz_localize("UTC") + pd.Timedelta(hours=9)
    frames.append(_points(study, s[ae], v[ae], forms["AE"], "1", {
        "AE.AESER": pd.Series(serious[ae]), "AE.AESTDTC": _iso(onset[ae]).reset_index(drop=True)},
        items, entered_at=entered[ae].reset_index(drop=True)))
    late = r == "sae_late"
    _expect(out, "safety_reporting", [f"safety_reporting:{x}:{y}:1" for x, y in zip(s[late], v[late], strict=True)])
    # I/E (SDTM: only criteria not met): the ineligible enrolled subjects, and every screen failure
    bad = r == "ineligible"
    frames.append(_points(study, s[bad], v[bad], forms["IE"], "1", {"IE.INCL03": pd.Series("N", index=range(
        int(bad.sum())))}, items))
    frames.append(_points(study, subject_ids[failed], log_visits[failed], forms["IE"], "1", {
        "IE.EXCL01": pd.Series("Y", index=range(int(failed.sum())))}, items))
    _expect(out, "eligibility", [f"eligibility:{x}" for x in s[bad]])
    points = pd.concat(frames, ignore_index=True)
    points["entered_at"] = pd.to_datetime(points.get("entered_at"), utc=True)
    columns = ["study_id", "subject_id", "visit_id", "form_id", "item_id", "repeat_key", "raw_value", "entered_at"]
    _write(DataPoint, points[columns], actor)
    out.counts["data_points"] = len(points)
