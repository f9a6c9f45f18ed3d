"""Visits against the plan's schedule: every visit outside its window (one deviation per visit),
and every planned visit missing although a later planned visit happened (one per missed visit).
Windows are inclusive (a visit on the edge is inside); study days follow SDTM (day 1 is the
subject's RFSTDTC, no day 0). Visits are matched to the plan by name (SDTM VISIT, ODM
StudyEventDef Name), ignoring case and surrounding spaces; a subject without RFSTDTC has no study
day, so only missed visits are looked for."""

import pandas as pd

from deviations.detectors import COLUMNS, day_iso, empty, planned_date, study_day


def _schedule(plan: dict) -> pd.DataFrame:
    return pd.DataFrame([{"name": name, "key": name.strip().upper(), "day": spec["day"],
                          "before": spec.get("before", 0), "after": spec.get("after", 0)}
                         for name, spec in plan["visits"].items()])


def detect(plan: dict, data) -> pd.DataFrame:
    schedule = _schedule(plan)
    visits = data.visits.assign(key=data.visits["name"].str.strip().str.upper())
    visits = visits.merge(schedule.drop(columns="name"), on="key", how="inner")
    if visits.empty:
        return empty()
    visits["reference"] = visits["subject"].map(data.subjects["first_dose"])
    return pd.concat([_out_of_window(visits), _missed(schedule, visits, data)], ignore_index=True)[COLUMNS]


def _out_of_window(visits: pd.DataFrame) -> pd.DataFrame:
    dated = visits[visits["reference"].notna()].copy()
    planned = planned_date(dated["reference"], dated["day"])
    low = planned - pd.to_timedelta(dated["before"], unit="D")
    high = planned + pd.to_timedelta(dated["after"], unit="D")
    out = dated[(dated["date"] < low) | (dated["date"] > high)].copy()
    if out.empty:
        return empty()
    out["on_day"] = study_day(out["date"], out["reference"])
    out["low_day"] = study_day(low[out.index], out["reference"])
    out["high_day"] = study_day(high[out.index], out["reference"])
    out["text"] = (visit_label(out) + " on study day " + out["on_day"].astype(str) + ", window "
                   + out["low_day"].astype(str) + " to " + out["high_day"].astype(str)
                   + " (planned day " + out["day"].astype(str) + ")")
    return pd.DataFrame({
        "key": "visit_window:" + out["visit"].astype(str), "subject": out["subject"], "visit": out["visit"],
        "rule": "visit_window.out_of_window", "occurred_on": out["date"], "description": out["text"],
        "evidence": [{"rule": f"planned day {d}, {b} day(s) before and {a} after (inclusive)", "visit": n,
                      "visit_date": day_iso(v), "study_day": int(s), "window": [int(lo), int(hi)], "text": t}
                     for d, b, a, n, v, s, lo, hi, t in zip(out["day"], out["before"], out["after"], out["name"],
                                                            out["date"], out["on_day"], out["low_day"],
                                                            out["high_day"], out["text"], strict=True)]})


def visit_label(frame: pd.DataFrame) -> pd.Series:
    suffix = (" (" + frame["repeat_key"] + ")").where(frame["repeat_key"] != "1", "")
    return frame["name"] + suffix


def _missed(schedule: pd.DataFrame, visits: pd.DataFrame, data) -> pd.DataFrame:
    """A planned visit no record of which exists while a visit planned later happened."""
    done = visits.groupby(["subject", "key"], as_index=False).agg(first=("date", "min"), day=("day", "first"))
    latest = done.groupby("subject")["day"].max()
    candidates = latest.rename("latest").reset_index().merge(schedule, how="cross")
    candidates = candidates[candidates["day"] < candidates["latest"]]
    candidates = candidates.merge(done[["subject", "key"]], on=["subject", "key"], how="left", indicator=True)
    missed = candidates[candidates["_merge"] == "left_only"].drop(columns="_merge")
    if missed.empty:
        return empty()
    # The later visit that shows it was missed: the first one done after it in the plan.
    later = missed.merge(done.rename(columns={"key": "later_key", "day": "later_day"}), on="subject")
    later = later[later["later_day"] > later["day"]].sort_values(["later_day"])
    later = later.drop_duplicates(["subject", "key"]).set_index(["subject", "key"])
    missed = missed.set_index(["subject", "key"]).join(later[["later_key", "first"]]).reset_index()
    names = dict(zip(schedule["key"], schedule["name"], strict=True))
    reference = missed["subject"].map(data.subjects["first_dose"])
    window_end = planned_date(reference, missed["day"]) + pd.to_timedelta(missed["after"], unit="D")
    missed["occurred"] = window_end.where(window_end.notna() & (window_end <= missed["first"]), missed["first"])
    missed["text"] = (missed["name"] + " (planned day " + missed["day"].astype(str) + ") not done although "
                      + missed["later_key"].map(names) + " was, on " + missed["first"].dt.strftime("%Y-%m-%d"))
    return pd.DataFrame({
        "key": "visit_missed:" + missed["subject"].astype(str) + ":" + missed["key"],
        "subject": missed["subject"], "visit": None, "rule": "visit_window.missed", "occurred_on": missed["occurred"],
        "description": missed["text"],
        "evidence": [{"rule": "every planned visit before the last one done", "visit": n, "planned_day": int(d),
                      "later_visit": names[lk], "later_visit_date": day_iso(f), "text": t}
                     for n, d, lk, f, t in zip(missed["name"], missed["day"], missed["later_key"], missed["first"],
                                               missed["text"], strict=True)]})
