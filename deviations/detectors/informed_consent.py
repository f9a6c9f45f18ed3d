"""Informed consent after the first visit, or after the first dose, or no consent date at all
(for a subject who had a visit or a dose). One deviation per subject, whichever rules it breaks;
consent on the same day as the first visit or dose is in order."""

import pandas as pd

from deviations.detectors import COLUMNS, day_iso, empty


def detect(plan: dict, data) -> pd.DataFrame:
    rules = plan.get("consent") or {}
    subjects = data.subjects
    if subjects.empty:
        return empty()
    first_visit = data.visits.groupby("subject")["date"].min().reindex(subjects.index)
    first_dose = subjects["first_dose"]
    if not data.exposure.empty:  # a dose recorded before the reference date counts too
        recorded = data.exposure.groupby("subject")["start"].min().reindex(subjects.index)
        first_dose = pd.concat([first_dose, recorded], axis=1).min(axis=1)
    consent = subjects["consent"]
    after_visit = consent.notna() & first_visit.notna() & (consent > first_visit)
    after_dose = consent.notna() & first_dose.notna() & (consent > first_dose)
    no_date = consent.isna() & (first_visit.notna() | first_dose.notna())
    after_visit &= rules.get("before_first_visit", True)
    after_dose &= rules.get("before_first_dose", True)
    no_date &= rules.get("required", True)
    hit = after_visit | after_dose | no_date
    if not hit.any():
        return empty()
    rows = []
    for subject, visit_day, dose_day, signed, by_visit, by_dose, undated in zip(
            subjects.index[hit], first_visit[hit], first_dose[hit], consent[hit], after_visit[hit], after_dose[hit],
            no_date[hit], strict=True):
        broken = [r for r, on in (("after_first_visit", by_visit), ("after_first_dose", by_dose),
                                  ("no_consent_date", undated)) if on]
        if undated:
            text = "No informed consent date recorded"
            if not pd.isna(visit_day):
                text += f"; first visit {day_iso(visit_day)}"
            if not pd.isna(dose_day):
                text += f"; first dose {day_iso(dose_day)}"
        else:
            parts = [f"the first visit ({day_iso(visit_day)})" if by_visit else "",
                     f"the first dose ({day_iso(dose_day)})" if by_dose else ""]
            text = f"Informed consent signed {day_iso(signed)}, after {' and after '.join(p for p in parts if p)}"
        procedures = [d for d, on in ((visit_day, by_visit or undated), (dose_day, by_dose or undated))
                      if on and not pd.isna(d)]
        rows.append({"key": f"informed_consent:{subject}", "subject": subject, "visit": None,
                     "rule": f"informed_consent.{broken[0]}", "occurred_on": min(procedures) if procedures else None,
                     "description": text,
                     "evidence": {"rule": "consent on or before the first visit and the first dose", "broken": broken,
                                  "consent_date": day_iso(signed), "first_visit": day_iso(visit_day),
                                  "first_dose": day_iso(dose_day), "text": text}})
    return pd.DataFrame(rows, columns=COLUMNS)
