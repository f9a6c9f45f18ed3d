"""Query metrics (QueryTracker, issue 6 item 8), computed set-based from any queryset of queries:
the caller scopes it (`query_list(user=...)`), so a site user gets the metrics of their site.

One SELECT reads the few columns needed (plus an EXISTS for re-queries), pandas does the rest;
the 42,259 clindata queries take about 0.6 s. Groups come in natural order (site 9 before 10).
Definitions:

- **Counts per state**: every query of the queryset, candidates included (only their readers see them).
- **Start** of a query: `released_at` when set (the site saw it then), else `created_at`.
- **Aging**: outstanding queries (open or answered) by whole days from the UTC date of their start
  to `today`, in buckets 0-7, 8-14, 15-30 and > 30 days. A start after `today` counts as 0 days.
- **Days to answer**: start -> `answered_at`, for queries with an `answered_at` (after a re-query
  that is the last answer). **Days to close**: start -> `closed_at`, for closed queries. Medians in
  days (fractional), overall and per site (number), per rule (`rule_code`, else "(manual)",
  "(rule)" or "(imported)" from the origin) and per marking group (`recipient`). Imported clindata
  queries carry their EDC marking group in `rule_code` ("EDC: System Query").
- **SLA breach rate**: among released queries (not candidates, not cancelled) with a due date,
  the share answered after it (or closed after it without an answer), or still open after it at
  `today`; the response date is taken in the site's time zone, like the due date. Queries
  without a due date (all imported ones: the EDC kept none) are counted apart, not as breaches.
- **Re-query rate**: among released, non-cancelled queries whose thread we hold (not imported:
  the EDC's thread is unknown), the share with at least one re-query message.
"""

import re
from datetime import date

import pandas as pd
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from queries.models import Query, QueryMessage

AGING_BUCKETS = (("0-7", 0, 7), ("8-14", 8, 14), ("15-30", 15, 30), (">30", 31, None))
OUTSTANDING = (Query.State.OPEN, Query.State.ANSWERED)
RELEASED = (Query.State.OPEN, Query.State.ANSWERED, Query.State.CLOSED)
_COLUMNS = ("id", "state", "origin", "rule_code", "recipient", "resolution", "site__number", "site__timezone",
            "created_at", "released_at", "answered_at", "closed_at", "due_date", "requeried")
SECONDS_PER_DAY = 86400


def query_metrics(*, queries: QuerySet[Query], today: date | None = None) -> dict:
    """The metrics of `queries` at `today` (default: today, UTC); definitions in the module docstring."""
    today = today or timezone.now().date()
    frame = query_frame(queries)
    released = frame[frame["state"].isin(RELEASED)]
    return {
        "as_of": today.isoformat(),
        "total": len(frame),
        "states": {state: int((frame["state"] == state).sum()) for state in Query.State.values},
        "aging": _aging(frame[frame["state"].isin(OUTSTANDING)], today),
        "overall": _overall(frame),
        "by_site": _by(frame, "site__number", "site"),
        "by_rule": _by(frame, "rule", "rule"),
        "by_recipient": _by(frame, "recipient", "recipient"),
        "sla": _sla(released, today),
        "requery": _requery(released),
    }


def query_frame(queries: QuerySet[Query]) -> pd.DataFrame:
    """One row per query with its start, days to answer and to close, and rule (definitions in the
    module docstring); also read by queries.selectors.rule_statistics."""
    requeried = QueryMessage.objects.filter(query=OuterRef("pk"), kind=QueryMessage.Kind.REQUERY)
    rows = queries.order_by().annotate(requeried=Exists(requeried)).values_list(*_COLUMNS)
    frame = pd.DataFrame.from_records(list(rows), columns=list(_COLUMNS))
    for column in ("created_at", "released_at", "answered_at", "closed_at"):
        # One unit for all: a column of NULLs alone would come back in seconds, not microseconds
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
    frame["start"] = frame["released_at"].fillna(frame["created_at"])
    frame["days_to_answer"] = (frame["answered_at"] - frame["start"]).dt.total_seconds() / SECONDS_PER_DAY
    closed = frame["state"] == Query.State.CLOSED
    frame["days_to_close"] = ((frame["closed_at"] - frame["start"]).dt.total_seconds() / SECONDS_PER_DAY).where(closed)
    frame["rule"] = frame["rule_code"].where(frame["rule_code"] != "", "(" + frame["origin"] + ")")
    return frame


def _aging(outstanding: pd.DataFrame, today: date) -> list[dict]:
    start_day = outstanding["start"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    age = (pd.Timestamp(today) - start_day).dt.days.clip(lower=0)
    out = []
    for label, low, high in AGING_BUCKETS:
        inside = (age >= low) & (age <= high) if high is not None else (age >= low)
        states = outstanding.loc[inside, "state"]
        out.append({"bucket": label, "open": int((states == Query.State.OPEN).sum()),
                    "answered": int((states == Query.State.ANSWERED).sum()), "total": int(inside.sum())})
    return out


def _overall(frame: pd.DataFrame) -> dict:
    rows = _by(frame.assign(scope="all"), "scope", "scope")
    empty = {"queries": 0, "outstanding": 0, "answered": 0, "median_days_to_answer": None, "closed": 0,
             "median_days_to_close": None}
    return {key: value for key, value in (rows[0] if rows else empty).items() if key != "scope"}


def _by(frame: pd.DataFrame, column: str, name: str) -> list[dict]:
    """Counts and medians per value of `column`, in one groupby."""
    grouped = frame.assign(outstanding=frame["state"].isin(OUTSTANDING)).groupby(column, sort=False).agg(
        queries=("state", "size"), outstanding=("outstanding", "sum"),
        answered=("days_to_answer", "count"), median_days_to_answer=("days_to_answer", "median"),
        closed=("days_to_close", "count"), median_days_to_close=("days_to_close", "median"))
    medians = ("median_days_to_answer", "median_days_to_close")
    rows = [{name: key, **{field: (None if pd.isna(value) else round(float(value), 1)) if field in medians
                           else int(value) for field, value in row.items()}}
            for key, row in grouped.iterrows()]
    return sorted(rows, key=lambda row: _natural(row[name]))


def _natural(label: str) -> list:
    """Site "9" before "10": digit runs compare as numbers (re.split puts them at odd places)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", str(label)))]


def _local_dates(stamps: pd.Series, zones: pd.Series) -> pd.Series:
    """Each timestamp's calendar date in its site's time zone (few zones: one conversion each)."""
    parts = [stamps[zones == zone].dt.tz_convert(zone).dt.tz_localize(None).dt.normalize() for zone in zones.unique()]
    return pd.concat(parts).reindex(stamps.index) if parts else pd.Series(pd.NaT, index=stamps.index)


def _sla(released: pd.DataFrame, today: date) -> dict:
    dated = released[released["due_date"].notna()]
    due = pd.to_datetime(dated["due_date"])
    responded = _local_dates(dated["answered_at"].fillna(dated["closed_at"]), dated["site__timezone"])
    still_open = dated["state"] == Query.State.OPEN
    breached = (still_open & (pd.Timestamp(today) > due)) | (~still_open & (responded > due))
    counted = len(dated)
    return {"with_due_date": counted, "without_due_date": len(released) - counted, "breached": int(breached.sum()),
            "breach_rate": round(float(breached.sum()) / counted, 4) if counted else None}


def _requery(released: pd.DataFrame) -> dict:
    known = released[released["origin"] != Query.Origin.IMPORTED]
    requeried = int(known["requeried"].sum())
    return {"queries": len(known), "requeried": requeried, "imported_without_thread": len(released) - len(known),
            "rate": round(requeried / len(known), 4) if len(known) else None}
