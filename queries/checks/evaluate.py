"""How each rule type finds its discrepancies: set-based, over frames of the study's data (or
in SQL for the rules that scan every lab value), never one Python call per data point.

Each evaluator takes all the active checks of its type at once and returns a frame of findings
with FINDING_COLUMNS. `key` names what was found within the check (see Discrepancy.key); the
same data, checked again, gives the same key, which is how a pass recognises what it found
before."""

import numpy as np
import pandas as pd

from queries.checks import expression as expression_language
from queries.checks import lab_limits
from queries.checks.context import Context
from queries.models import EditCheck

T = EditCheck.RuleType
FINDING_COLUMNS = ["check_id", "key", "data_point_id", "subject_id", "visit_id", "item_id", "observed", "expected",
                   "magnitude", "medical", "unit_factor"]


def findings(frame: pd.DataFrame, **values) -> pd.DataFrame:
    """`frame` with every finding column, filled from `values` where it lacks one."""
    frame = frame.assign(**{k: v for k, v in values.items() if k not in frame.columns or v is not None})
    for column in FINDING_COLUMNS:
        if column not in frame.columns:
            frame[column] = False if column == "medical" else None
    return frame[FINDING_COLUMNS].reset_index(drop=True)


def _point_keys(frame: pd.DataFrame) -> pd.Series:
    return "dp:" + frame["id"].astype("int64").astype(str)


def _number_text(values: pd.Series) -> pd.Series:
    return values.map(lambda v: "" if pd.isna(v) else format(float(v), "g"))


def _limits_text(low, high, units: str) -> str:
    unit = f" {units}" if units else ""
    if low is not None and high is not None:
        return f"{low:g} to {high:g}{unit}"
    return f">= {low:g}{unit}" if low is not None else f"<= {high:g}{unit}"


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=FINDING_COLUMNS)


def required(checks: list[EditCheck], ctx: Context) -> pd.DataFrame:
    """A required item absent or blank in a record (subject, visit, repeat) of its form that has
    any other value: a form not started at all is not a missing item."""
    forms = {check.item.form_id for check in checks if check.item.form_id}
    points = ctx.points([], local=False, form_ids=forms)
    if points.empty:
        return _empty()
    record = ["subject_id", "visit_id", "repeat_key"]
    visit_oids = ctx.visits().set_index("id")["oid"]
    out = []
    for check in checks:
        form_points = points[points["form_id"] == check.item.form_id]
        records = form_points[form_points["raw_value"] != ""][record].drop_duplicates()
        if "visits" in check.params:
            records = records[records["visit_id"].map(visit_oids).isin(check.params["visits"])]
        mine = form_points[form_points["item_id"] == check.item_id]
        merged = records.merge(mine[[*record, "id", "raw_value"]], on=record, how="left")
        missing = merged[merged["raw_value"].isna() | (merged["raw_value"] == "")]
        if missing.empty:
            continue
        has_point = missing["id"].notna()
        key = np.where(has_point, "dp:" + missing["id"].astype("Int64").astype(str),
                       "missing:" + missing["subject_id"].astype(str) + ":" + missing["visit_id"].astype(str)
                       + ":" + missing["repeat_key"].astype(str))
        out.append(findings(missing, check_id=check.pk, key=key, data_point_id=missing["id"].astype("Int64"),
                            item_id=check.item_id, observed="(empty)", expected="a value"))
    return pd.concat(out, ignore_index=True) if out else _empty()


def range_(checks: list[EditCheck], ctx: Context) -> pd.DataFrame:
    """Values outside the check's limits, in the check's units (a value in other units is
    converted where the analyte and both units are known); text in a numeric item."""
    limits = pd.DataFrame([{"check_id": c.pk, "item_id": c.item_id, "low": c.params.get("low"),
                            "high": c.params.get("high"), "units": c.params.get("units") or ""} for c in checks])
    rows = ctx.points_outside(limits)
    if rows.empty:
        return _empty()
    rows = rows.merge(limits[["check_id", "low", "high", "units"]].rename(columns={"units": "check_units"}),
                      on="check_id")
    value = rows["value_number"].astype(float)
    foreign = (rows["units"] != "") & (rows["units"] != rows["check_units"])
    if foreign.any():
        value = value.copy()
        value[foreign] = [_convert(v, u, cu, ctx.items[i]) for v, u, cu, i in
                          rows.loc[foreign, ["value_number", "units", "check_units", "item_id"]].itertuples(
                              index=False, name=None)]  # rows in foreign units only: a handful
    low = rows["low"].astype(float)
    high = rows["high"].astype(float)
    outside = value.isna() | (value < low.fillna(-np.inf)) | (value > high.fillna(np.inf))
    rows, value, low, high = rows[outside], value[outside], low[outside], high[outside]
    if rows.empty:
        return _empty()
    # How far out: 10x a limit suggests a unit error (severity)
    magnitude = np.fmax((value / high.where(high > 0)).to_numpy(dtype=float),
                        (low.where(value > 0) / value.where(value > 0)).to_numpy(dtype=float))
    expected = [_limits_text(None if pd.isna(lo) else lo, None if pd.isna(hi) else hi, u)
                for lo, hi, u in zip(low, high, rows["check_units"], strict=True)]
    observed = np.where(rows["value_number"].isna(), rows["raw_value"],
                        _number_text(rows["value_number"]) + np.where(rows["units"] != "", " " + rows["units"], ""))
    return findings(rows, key=_point_keys(rows), data_point_id=rows["id"], observed=observed, expected=expected,
                    magnitude=magnitude)


def _convert(value, units: str, to_units: str, item) -> float:
    analyte = lab_limits.item_analyte(item)
    if analyte is None:
        return np.nan  # not comparable: reported as outside, with its units
    si = lab_limits.to_si(value, units, analyte)
    back = lab_limits.to_si(1.0, to_units, analyte)
    return np.nan if si is None or not back else si / back


def codelist(checks: list[EditCheck], ctx: Context) -> pd.DataFrame:
    points = ctx.points([c.item_id for c in checks], local=True)
    out = []
    for check in checks:
        mine = points[(points["item_id"] == check.item_id) & (points["raw_value"] != "")]
        bad = mine[~mine["raw_value"].str.strip().isin(check.params["codes"])]
        if not bad.empty:
            out.append(findings(bad, check_id=check.pk, key=_point_keys(bad), data_point_id=bad["id"],
                                observed=bad["raw_value"], expected="one of " + ", ".join(check.params["codes"][:20])))
    return pd.concat(out, ignore_index=True) if out else _empty()


def future_date(checks: list[EditCheck], ctx: Context) -> pd.DataFrame:
    points = ctx.points([c.item_id for c in checks], local=True)
    late = points[points["value_date"] > pd.Timestamp(ctx.today)]
    if late.empty:
        return _empty()
    by_item = {c.item_id: c.pk for c in checks}
    return findings(late, check_id=late["item_id"].map(by_item), key=_point_keys(late), data_point_id=late["id"],
                    observed=late["value_date"].dt.strftime("%Y-%m-%d"), expected=f"on or before {ctx.today}")


def _anchor_dates(check: EditCheck, points: pd.DataFrame, ctx: Context, subjects: pd.DataFrame,
                  visits: pd.DataFrame) -> pd.Series:
    """For each row of `points`, the date the rule measures it from (NaT: unknown, not checked)."""
    anchor = check.params["anchor"]
    if anchor in ("consent", "enrolment"):
        column = "consent_date" if anchor == "consent" else "enrolment_date"
        return points["subject_id"].map(subjects.set_index("id")[column])
    if anchor == "visit":
        first = visits[visits["oid"] == check.params["anchor_visit"]].sort_values("actual_date")
        return points["subject_id"].map(first.drop_duplicates("subject_id").set_index("subject_id")["actual_date"])
    other = ctx.items_by_oid[check.params["anchor_item"]]
    others = ctx.points([other.pk], local=False)
    others = others[others["value_date"].notna()]
    if other.form_id == check.item.form_id:  # same record: AE end against AE start
        keyed = others.set_index(["subject_id", "visit_id", "repeat_key"])["value_date"]
        index = pd.MultiIndex.from_frame(points[["subject_id", "visit_id", "repeat_key"]])
        return pd.Series(keyed.reindex(index).to_numpy(), index=points.index)
    return points["subject_id"].map(others.groupby("subject_id")["value_date"].min())


def date_rules(checks: list[EditCheck], ctx: Context) -> pd.DataFrame:
    """Date order (on or after / on or before an anchor) and date windows (anchor + min..max
    days): the anchor is the consent or enrolment date, a visit's date or another date item."""
    points = ctx.points([c.item_id for c in checks], local=False)
    points = points[points["value_date"].notna()]
    if points.empty:
        return _empty()
    subjects, visits = ctx.subjects(), ctx.visits()
    out = []
    for check in checks:
        mine = points[points["item_id"] == check.item_id]
        anchor = _anchor_dates(check, mine, ctx, subjects, visits)
        days = (mine["value_date"] - anchor).dt.days
        low, high = check.params.get("min_days"), check.params.get("max_days")
        if check.rule_type == T.DATE_ORDER:
            if check.params["order"] == "after":
                low, high = (low or 0), None
            else:
                low, high = None, (high or 0)
        too_early = (days < low) if low is not None else False
        too_late = (days > high) if high is not None else False
        bad = days.notna() & (too_early | too_late)
        bad_rows = mine[bad]
        if bad_rows.empty:
            continue
        what = {"consent": "the consent date", "enrolment": "the enrolment date",
                "visit": f"visit {check.params.get('anchor_visit')}", "item": check.params.get("anchor_item")}
        expected = _window_text(low, high, what[check.params["anchor"]])
        anchor_text = anchor[bad].dt.strftime("%Y-%m-%d")
        out.append(findings(bad_rows, check_id=check.pk, key=_point_keys(bad_rows), data_point_id=bad_rows["id"],
                            observed=bad_rows["value_date"].dt.strftime("%Y-%m-%d") + " ("
                            + what[check.params["anchor"]] + ": " + anchor_text + ")", expected=expected))
    return pd.concat(out, ignore_index=True) if out else _empty()


def _window_text(low, high, anchor: str) -> str:
    if low is not None and high is not None:
        return f"{low} to {high} days after {anchor}" if (low, high) != (0, 0) else f"on {anchor}"
    if low is not None:
        return f"on or after {anchor}" if low == 0 else f"at least {low} days after {anchor}"
    return f"on or before {anchor}" if high == 0 else f"at most {high} days after {anchor}"


def visit_window(checks: list[EditCheck], ctx: Context) -> pd.DataFrame:
    """Actual visit date against its planned study day +/- window. Study day 1 is the reference
    date (the visit planned on day 1, or enrolment or consent), and there is no day 0."""
    visits = ctx.visits()
    visits = visits[visits["actual_date"].notna()]
    if visits.empty:
        return _empty()
    subjects = ctx.subjects().set_index("id")
    out = []
    for check in checks:
        reference = check.params.get("reference", "day1")
        if reference == "day1":
            day1 = visits[visits["planned_day"] == 1].sort_values("actual_date").drop_duplicates("subject_id")
            ref = visits["subject_id"].map(day1.set_index("subject_id")["actual_date"])
        else:
            ref = visits["subject_id"].map(subjects["consent_date" if reference == "consent" else "enrolment_date"])
        planned = visits["planned_day"]
        before, after = visits["window_before"].astype(float), visits["window_after"].astype(float)
        unset = (before == 0) & (after == 0)
        default = check.params.get("default_window")
        before = before.where(~unset, np.nan if default is None else default)
        after = after.where(~unset, np.nan if default is None else default)
        delta = (visits["actual_date"] - ref).dt.days
        day = np.where(delta >= 0, delta + 1, delta)
        candidates = planned.notna() & ref.notna() & before.notna()
        if "visits" in check.params:
            candidates &= visits["oid"].isin(check.params["visits"])
        bad = candidates & ((day < planned - before) | (day > planned + after))
        rows = visits[bad]
        if rows.empty:
            continue
        day_bad = pd.Series(day, index=visits.index)[bad].astype(int)
        out.append(findings(rows, check_id=check.pk, key="visit:" + rows["id"].astype(str), visit_id=rows["id"],
                            observed="study day " + day_bad.astype(str) + " (" + rows["actual_date"].dt.strftime(
                                "%Y-%m-%d") + ")",
                            expected="study day " + rows["planned_day"].astype(int).astype(str) + " (-"
                            + before[bad].astype(int).astype(str) + "/+" + after[bad].astype(int).astype(str) + ")"))
    return pd.concat(out, ignore_index=True) if out else _empty()


def consistency(checks: list[EditCheck], ctx: Context) -> pd.DataFrame:
    """When an item has one of the trigger values (an AE marked serious, a discontinuation), a
    form or item must be present for the subject (or the same visit)."""
    forms = {i.form.oid: i.form_id for i in ctx.items.values() if i.form}
    wanted = [(check, ctx.items_by_oid[check.params["when"]["item"]].pk, check.params["require"]) for check in checks]
    # Every trigger and required item, and every required form, in one read
    points = ctx.points({trigger for _, trigger, _ in wanted}
                        | {ctx.items_by_oid[r["item"]].pk for _, _, r in wanted if "form" not in r},
                        local=False, form_ids={forms.get(r["form"]) for _, _, r in wanted if "form" in r} - {None})
    out = []
    for check, trigger, require in wanted:
        when = check.params["when"]
        triggers = points[points["item_id"] == trigger]
        values = set(v.strip().lower() for v in when["in"])
        triggers = triggers[triggers["raw_value"].str.strip().str.lower().isin(values)]
        if triggers.empty:
            continue
        if "form" in require:
            present = points[points["form_id"] == forms[require["form"]]]  # KeyError: a form without items
        else:
            present = points[points["item_id"] == ctx.items_by_oid[require["item"]].pk]
        present = present[present["raw_value"] != ""]
        on = {"subject": ["subject_id"], "visit": ["subject_id", "visit_id"],
              "record": ["subject_id", "visit_id", "repeat_key"]}[check.params["scope"]]
        found = triggers.merge(present[on].drop_duplicates(), on=on, how="left", indicator=True)
        bad = found[found["_merge"] == "left_only"]
        if bad.empty:
            continue
        what = require.get("form") or require.get("item")
        out.append(findings(bad, check_id=check.pk, key=_point_keys(bad), data_point_id=bad["id"],
                            observed=f"{when['item']} = " + bad["raw_value"] + f"; no {what}",
                            expected=f"{what} present"))
    return pd.concat(out, ignore_index=True) if out else _empty()


def duplicate(checks: list[EditCheck], ctx: Context) -> pd.DataFrame:
    """Records of a log form with the same key values (the same AE twice), or an item recorded
    more than once for the same subject and visit. The first one stays; the others are found."""
    out = []
    for check in checks:
        if "form" in check.params:
            key_items = [ctx.items_by_oid[oid].pk for oid in check.params["keys"]]
            points = ctx.points(key_items, local=False)
            points = points.assign(norm=points["raw_value"].str.strip().str.lower())
            record = ["subject_id", "visit_id", "repeat_key"]  # AEs may be entered per visit, each as repeat 1
            wide = points.pivot_table(index=record, columns="item_id", values="norm", aggfunc="first")
            ids = points.pivot_table(index=record, columns="item_id", values="id", aggfunc="min")
            wide = wide.reindex(columns=key_items).dropna()
            wide = wide[(wide != "").all(axis=1)]
            order = ids.reindex(index=wide.index, columns=key_items)[key_items[0]]
            wide = wide.assign(first_id=order).sort_values("first_id").reset_index()
            same = ["subject_id", *key_items]  # the same record twice is within one subject
            repeated = wide.duplicated(subset=same, keep="first")
            rows = wide[repeated].reset_index(drop=True)
            if rows.empty:
                continue
            original = wide.drop_duplicates(subset=same, keep="first").set_index(same)["first_id"]
            first = pd.Series(original.reindex(pd.MultiIndex.from_frame(rows[same])).to_numpy(), index=rows.index)
            rows = rows.assign(id=rows["first_id"].astype("int64"))
            out.append(findings(rows, check_id=check.pk, key=_point_keys(rows), data_point_id=rows["id"],
                                item_id=key_items[0],
                                observed="the same " + ", ".join(check.params["keys"]) + " as record with data point "
                                + first.astype("Int64").astype(str),
                                expected="one record"))
        else:
            points = ctx.points([check.item_id], local=False).sort_values("id")
            repeated = points.duplicated(subset=["subject_id", "visit_id"], keep="first")
            rows = points[repeated]
            if rows.empty:
                continue
            out.append(findings(rows, check_id=check.pk, key=_point_keys(rows), data_point_id=rows["id"],
                                observed="recorded again: " + rows["raw_value"], expected="once per visit"))
    return pd.concat(out, ignore_index=True) if out else _empty()


def _typed(item, points: pd.DataFrame) -> pd.Series:
    if item.data_type in ("integer", "float"):
        return points["value_number"]
    if item.data_type in ("date", "datetime"):
        return points["value_date"]
    return points["raw_value"].where(points["raw_value"] != "")


def expression(checks: list[EditCheck], ctx: Context) -> pd.DataFrame:
    """A study-specific condition over items (safe expression language): the rows where it is
    false are found; rows where a value it needs is missing are not (unknown, not wrong)."""
    out = []
    for check in checks:
        parsed = expression_language.parse(check.params["expression"])
        items = {oid: ctx.items_by_oid[oid] for oid in parsed.variables}
        target = check.item
        points = ctx.points({i.pk for i in items.values()} | {target.pk}, local=False)
        index = {"record": ["subject_id", "visit_id", "repeat_key"], "visit": ["subject_id", "visit_id"],
                 "subject": ["subject_id"]}[check.params["scope"]]
        points = points.sort_values("id")
        columns = {}
        for oid, item in items.items():
            mine = points[points["item_id"] == item.pk]
            columns[oid] = mine.assign(v=_typed(item, mine)).drop_duplicates(index).set_index(index)["v"]
        target_ids = points[points["item_id"] == target.pk].drop_duplicates(index).set_index(index)["id"]
        wide = pd.DataFrame(columns)
        if wide.empty:
            continue
        result = parsed.evaluate(wide)
        bad = wide[(result == False).fillna(False).astype(bool)]  # noqa: E712 (a nullable boolean Series)
        if bad.empty:
            continue
        rows = bad.reset_index()
        ids = target_ids.reindex(bad.index).to_numpy()
        rows["id"] = pd.array(ids, dtype="Int64")
        if "visit_id" not in rows:
            rows["visit_id"] = None
        keys = np.where(rows["id"].notna(), "dp:" + rows["id"].astype(str),
                        "expr:" + rows[index].astype(str).agg(":".join, axis=1))
        shown = [", ".join(f"{oid} = {row[oid]}" for oid in items) for _, row in rows.iterrows()]  # findings only
        out.append(findings(rows, check_id=check.pk, key=keys, data_point_id=rows["id"], item_id=target.pk,
                            observed=shown, expected=check.params["expression"]))
    return pd.concat(out, ignore_index=True) if out else _empty()


def lab_plausibility(checks: list[EditCheck], ctx: Context) -> pd.DataFrame:
    """Lab values outside physiological limits (a data error; a value that fits once multiplied
    by a unit factor is a unit error), and plausible values outside their normal range (a
    clinical signal: medical review, not a query)."""
    analytes = {c.pk: lab_limits.analyte_for(c.params["analyte"]) for c in checks}
    limits = pd.DataFrame([{"check_id": c.pk, "item_id": c.item_id, "low": analytes[c.pk].low,
                            "high": analytes[c.pk].high, "units": c.params.get("units") or analytes[c.pk].unit}
                           for c in checks])
    rows = ctx.points_outside(limits, normal_range=any(c.params.get("medical_review") for c in checks))
    rows = rows[rows["value_number"].notna()]  # text in a numeric item is the range rule's finding
    if rows.empty:
        return _empty()
    rows = rows.merge(limits[["check_id", "units"]].rename(columns={"units": "check_units"}), on="check_id")
    units = rows["units"].where(rows["units"] != "", rows["check_units"])
    verdict = lab_limits.plausibility(pd.DataFrame({"analyte": rows["check_id"].map(
        {k: a.key for k, a in analytes.items()}), "value": rows["value_number"].astype(float), "units": units}))
    plausible = verdict["plausible"].fillna(True).astype(bool).to_numpy()
    medical_review = rows["check_id"].map({c.pk: bool(c.params.get("medical_review")) for c in checks}).to_numpy()
    abnormal = ((rows["value_number"] < rows["normal_low"]) | (rows["value_number"] > rows["normal_high"])).to_numpy()
    error_rows = rows[~plausible]
    signal_rows = rows[plausible & abnormal & medical_review]
    out = []
    if not error_rows.empty:
        v = verdict[~plausible]
        out.append(findings(error_rows, key=_point_keys(error_rows), data_point_id=error_rows["id"],
                            observed=_number_text(error_rows["value_number"]) + " " + units[~plausible],
                            expected=["physiologically possible: " + _limits_text(lo, hi, u) for lo, hi, u in
                                      zip(v["low"], v["high"], units[~plausible], strict=True)],
                            unit_factor=v["unit_error_factor"].to_numpy()))
    if not signal_rows.empty:
        value, low, high = (signal_rows[c].astype(float) for c in ("value_number", "normal_low", "normal_high"))
        magnitude = np.fmax((value / high.where(high > 0)).to_numpy(dtype=float),
                            (low / value.where(value > 0)).to_numpy(dtype=float))
        out.append(findings(signal_rows, key="signal:" + signal_rows["id"].astype("int64").astype(str),
                            data_point_id=signal_rows["id"], medical=True, magnitude=magnitude,
                            observed=_number_text(value) + " " + units[plausible & abnormal & medical_review],
                            expected=["normal range " + _limits_text(lo, hi, "") for lo, hi in
                                      zip(low.fillna(-np.inf), high.fillna(np.inf), strict=True)]))
    return pd.concat(out, ignore_index=True) if out else _empty()


EVALUATORS = {
    T.REQUIRED: required, T.RANGE: range_, T.CODELIST: codelist, T.DATE_ORDER: date_rules,
    T.DATE_WINDOW: date_rules, T.VISIT_WINDOW: visit_window, T.FUTURE_DATE: future_date,
    T.CONSISTENCY: consistency, T.LAB_PLAUSIBILITY: lab_plausibility, T.DUPLICATE: duplicate,
    T.EXPRESSION: expression,
}
