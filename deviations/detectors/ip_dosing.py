"""Every exposure record (EX) whose dose is not one the subject's arm allows (one per record). The
arm is the subject's ARMCD; a protocol's allowed reduction is one of the arm's listed doses. A dose
another arm allows is coded as a wrong treatment; any other as a wrong dose. Where the plan gives
the arm's units, a record in other units (case aside) is not an allowed dose. Records without a
dose, and subjects without an arm or with an arm the plan does not list, cannot be judged: they
are counted in the pass, not reported as deviations."""

import pandas as pd

from deviations.detectors import COLUMNS, day_iso, empty


def _allowed(arms: dict) -> pd.DataFrame:
    return pd.DataFrame([{"arm": arm, "dose_key": round(float(dose), 6), "units_ok": (spec.get("units") or "").lower()}
                         for arm, spec in arms.items() for dose in spec["doses"]])


def detect(plan: dict, data) -> pd.DataFrame:
    arms = plan["dosing"]["arms"]
    records = data.exposure
    if records.empty:
        return empty()
    records = records.assign(arm=records["subject"].map(data.subjects["arm"]).fillna(""))
    judged = records[records["dose"].notna() & records["arm"].isin(list(arms))].copy()
    data.notes["ip_dosing_not_assessable"] = int(len(records) - len(judged))
    if judged.empty:
        return empty()
    judged["dose_key"] = judged["dose"].round(6)
    judged["units_l"] = judged["units"].str.strip().str.lower()
    allowed = _allowed(arms)
    here = judged.merge(allowed, on=["arm", "dose_key"], how="left")
    here["ok"] = here["units_ok"].notna() & ((here["units_ok"] == "") | (here["units_l"] == "")
                                             | (here["units_l"] == here["units_ok"]))
    here = here.groupby(["subject", "visit", "repeat_key"], as_index=False)["ok"].any()
    bad = judged.merge(here[~here["ok"]][["subject", "visit", "repeat_key"]], on=["subject", "visit", "repeat_key"])
    if bad.empty:
        return empty()
    other = set(allowed["dose_key"])
    visit_dates = set(data.visits["visit"])
    rows = []
    for r in bad.itertuples(index=False):
        spec = arms[r.arm]
        units = spec.get("units") or r.units or ""
        rule = "ip_dosing.other_arm_dose" if r.dose_key in other and r.dose_key not in {
            round(float(d), 6) for d in spec["doses"]} else "ip_dosing.dose_not_allowed"
        allows = ", ".join(f"{d:g}" for d in spec["doses"])
        text = (f"EX record {r.repeat_key}: {r.dose_text} {r.units or ''}".rstrip()
                + (f" from {day_iso(r.start)}" if not pd.isna(r.start) else "")
                + f"; arm {r.arm} allows {allows} {units}".rstrip())
        rows.append({"key": f"ip_dosing:{r.subject}:{r.visit}:{r.repeat_key}", "subject": r.subject,
                     "visit": r.visit if r.visit in visit_dates else None, "rule": rule, "occurred_on": r.start,
                     "description": text,
                     "evidence": {"rule": f"doses allowed in arm {r.arm}: {allows} {units}".rstrip(), "arm": r.arm,
                                  "record": r.repeat_key, "dose": r.dose_text, "units": r.units,
                                  "start": day_iso(r.start), "text": text}})
    return pd.DataFrame(rows, columns=COLUMNS)
