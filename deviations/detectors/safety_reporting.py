"""A serious adverse event reported later than `safety.report_within_days` days after its onset
(one per SAE). The report date is the plan's `data.adverse_events.reported` item where the study
has one, else when the SAE was entered in the EDC (the record's first entry time). Exactly N days
is in time. An SAE without an onset or a report date cannot be judged (counted in the pass)."""

import pandas as pd

from deviations.detectors import COLUMNS, day_iso, empty


def detect(plan: dict, data) -> pd.DataFrame:
    limit = int(plan["safety"]["report_within_days"])
    saes = data.adverse_events
    if saes.empty:
        return empty()
    judged = saes[saes["onset"].notna() & saes["reported"].notna()]
    data.notes["safety_reporting_not_assessable"] = int(len(saes) - len(judged))
    late = judged[(judged["reported"] - judged["onset"]).dt.days > limit]
    rows = []
    for r in late.itertuples(index=False):
        days = (r.reported - r.onset).days
        text = (f"SAE record {r.repeat_key}: onset {day_iso(r.onset)}, reported {day_iso(r.reported)} "
                f"({days} days; the protocol allows {limit})")
        rows.append({"key": f"safety_reporting:{r.subject}:{r.visit}:{r.repeat_key}", "subject": r.subject,
                     "visit": None, "rule": "safety_reporting.sae_late",
                     "occurred_on": r.onset + pd.Timedelta(days=limit + 1), "description": text,
                     "evidence": {"rule": f"an SAE reported within {limit} day(s) of its onset",
                                  "record": r.repeat_key, "onset": day_iso(r.onset), "reported": day_iso(r.reported),
                                  "days": days, "text": text}})
    return pd.DataFrame(rows, columns=COLUMNS) if rows else empty()
