"""A subject who entered the study although an inclusion/exclusion criterion was not met: one
deviation per subject, listing the criteria. Screen failures (and subjects still in screening)
never entered, so a criterion they did not meet is no deviation."""

import pandas as pd

from deviations.detectors import COLUMNS, day_iso, empty

ENTERED = ("enrolled", "completed", "discontinued")


def detect(plan: dict, data) -> pd.DataFrame:
    unmet = data.unmet_criteria
    if unmet.empty:
        return empty()
    unmet = unmet[unmet["subject"].map(data.subjects["status"]).isin(ENTERED)]
    if unmet.empty:
        return empty()
    rows = []
    for subject, group in unmet.groupby("subject"):
        criteria = sorted(set(group["criterion"]))
        info = data.subjects.loc[subject]
        entered = info["first_dose"] if not pd.isna(info["first_dose"]) else info["enrolment"]
        text = f"Entered the study although {len(criteria)} criterion(a) not met: {', '.join(criteria)}"
        rows.append({"key": f"eligibility:{subject}", "subject": subject, "visit": None,
                     "rule": "eligibility.criteria_not_met", "occurred_on": None if pd.isna(entered) else entered,
                     "description": text,
                     "evidence": {"rule": "every inclusion criterion met and no exclusion criterion met",
                                  "criteria": criteria, "entered_on": day_iso(entered), "text": text}})
    return pd.DataFrame(rows, columns=COLUMNS)
