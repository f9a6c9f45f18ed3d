"""The detectors of PatternRecognition, one module per kind. Each is a function
`detect(plan: dict, data: StudyData) -> DataFrame` of findings, vectorised over the whole study
(pandas over the frames deviations.detectors.data reads): no per-subject loop, no database access.

A finding is one row: `key` (the evidence key: the same deviation is found again under the same
key, so a re-run writes nothing), `subject`, `visit` (or missing), `rule`, `occurred_on`,
`description` (readable by a person: "WEEK 2 on study day 22, window 12-18") and `evidence` (the
records and the rule, as JSON). A detector whose plan section is absent returns no findings and is
not run at all (its deviations are left as they are)."""

import pandas as pd

COLUMNS = ["key", "subject", "visit", "rule", "occurred_on", "description", "evidence"]


def empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


def day_iso(value) -> str | None:
    return None if pd.isna(value) else pd.Timestamp(value).date().isoformat()


def study_day(dates: pd.Series, reference: pd.Series) -> pd.Series:
    """SDTM study day: day 1 is the reference start date, there is no day 0 (the day before is -1)."""
    delta = (dates - reference).dt.days
    return delta.where(delta < 0, delta + 1)


def planned_date(reference: pd.Series, day: pd.Series) -> pd.Series:
    """The calendar date of a planned study day (no day 0: day 1 is the reference itself)."""
    offset = day.where(day < 0, day - 1)
    return reference + pd.to_timedelta(offset, unit="D")


def detectors() -> dict:
    """category -> (plan section that switches it on, detect function)."""
    from deviations.detectors import (  # noqa: PLC0415 (the modules import this one)
        eligibility,
        informed_consent,
        ip_dosing,
        prohibited_medication,
        safety_reporting,
        visit_window,
    )

    return {"informed_consent": informed_consent.detect, "visit_window": visit_window.detect,
            "ip_dosing": ip_dosing.detect, "prohibited_medication": prohibited_medication.detect,
            "eligibility": eligibility.detect, "safety_reporting": safety_reporting.detect}


def enabled(plan: dict, category: str) -> bool:
    """Whether the plan switches the category's detector on (its section is there)."""
    if category == "informed_consent":
        return "consent" in plan
    if category == "visit_window":
        return bool(plan.get("visits"))
    if category == "ip_dosing":
        return "dosing" in plan
    if category == "prohibited_medication":
        return "prohibited_medications" in plan
    if category == "eligibility":
        return bool((plan.get("eligibility") or {}).get("criteria_not_met_is_deviation"))
    if category == "safety_reporting":
        return "safety" in plan
    return False
