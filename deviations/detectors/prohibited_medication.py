"""Every concomitant medication record (CM) of a prohibited drug taken within its washout before
the first dose or at any time on treatment (one per record). The drug is matched on CMDECOD, then
CMTRT, case-insensitively. A drug stopped `washout_days` or more days before the first dose is in
order (the edge is inside the allowed), one started after the last dose too. A missing end date
means ongoing; a missing start date, taken since an unknown date; a record with neither date is a
prohibited drug at an unknown time and is reported. Subjects never dosed cannot be judged."""

import pandas as pd

from deviations.detectors import COLUMNS, day_iso, empty


def detect(plan: dict, data) -> pd.DataFrame:
    washout = {m["name"].strip().upper(): int(m.get("washout_days", 0)) for m in plan["prohibited_medications"]}
    meds = data.con_meds
    if meds.empty:
        return empty()
    decod, term = meds["decod"].str.strip().str.upper(), meds["term"].str.strip().str.upper()
    meds = meds.assign(drug=decod.where(decod.isin(list(washout)), term),
                       matched_on=pd.Series("CMDECOD", index=meds.index).where(decod.isin(list(washout)), "CMTRT"))
    meds = meds[meds["drug"].isin(list(washout))].copy()
    meds["first_dose"] = meds["subject"].map(data.subjects["first_dose"])
    data.notes["prohibited_medication_not_assessable"] = int(meds["first_dose"].isna().sum())
    meds = meds[meds["first_dose"].notna()]
    if meds.empty:
        return empty()
    meds["washout"] = meds["drug"].map(washout)
    ends = data.treatment_end()
    meds["last_dose"] = pd.to_datetime(meds["subject"].map(ends)) if not ends.empty else pd.NaT
    # Days from the end of intake to the first dose: under max(washout, 1) is too close (0 = on
    # the first dose day, negative = on treatment).
    gap = (meds["first_dose"] - meds["end"]).dt.days
    too_close = meds["end"].isna() | (gap < meds["washout"].clip(lower=1))
    started_before_end = meds["start"].isna() | meds["last_dose"].isna() | (meds["start"] <= meds["last_dose"])
    bad = meds[too_close & started_before_end]
    rows = []
    for r in bad.itertuples(index=False):
        span = f"{day_iso(r.start) or 'start not recorded'} to {day_iso(r.end) or 'ongoing'}"
        if pd.isna(r.start) and pd.isna(r.end):
            where = "at a time not recorded"
        elif not pd.isna(r.end) and r.end < r.first_dose:
            where = f"within the {r.washout}-day washout before the first dose ({day_iso(r.first_dose)})"
        else:
            where = f"on treatment (first dose {day_iso(r.first_dose)})"
        text = f"CM record {r.repeat_key}: {r.drug} ({r.matched_on}) {span}, {where}"
        occurred = r.first_dose if pd.isna(r.start) or r.start < r.first_dose else r.start
        rows.append({"key": f"prohibited_medication:{r.subject}:{r.visit}:{r.repeat_key}", "subject": r.subject,
                     "visit": None, "rule": "prohibited_medication.taken", "occurred_on": occurred, "description": text,
                     "evidence": {"rule": f"{r.drug} prohibited on treatment and {r.washout} day(s) before the "
                                          "first dose", "drug": r.drug, "matched_on": r.matched_on,
                                  "record": r.repeat_key, "start": day_iso(r.start), "end": day_iso(r.end),
                                  "first_dose": day_iso(r.first_dose), "last_dose": day_iso(r.last_dose),
                                  "text": text}})
    return pd.DataFrame(rows, columns=COLUMNS) if rows else empty()
