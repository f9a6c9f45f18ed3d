"""Calendar arithmetic for the plan view and a CRA's calendar: week and month grids of visits."""

import datetime
from collections import defaultdict


def parse_day(value: str | None, default: datetime.date) -> datetime.date:
    try:
        return datetime.date.fromisoformat(value or "")
    except ValueError:
        return default


def period(view: str, at: datetime.date) -> tuple[datetime.date, datetime.date, datetime.date, datetime.date]:
    """(first day shown, day after the last, previous period's anchor, next one's) of a week (Monday
    to Sunday) or a month grid (whole weeks covering the month)."""
    if view == "month":
        first = at.replace(day=1)
        following = (first + datetime.timedelta(days=32)).replace(day=1)
        start = first - datetime.timedelta(days=first.weekday())
        end = following + datetime.timedelta(days=(7 - following.weekday()) % 7)
        previous = (first - datetime.timedelta(days=1)).replace(day=1)
        return start, end, previous, following
    start = at - datetime.timedelta(days=at.weekday())
    return start, start + datetime.timedelta(days=7), start - datetime.timedelta(days=7), start + datetime.timedelta(
        days=7)


def grid(visits, start: datetime.date, end: datetime.date, month: int | None = None) -> list[list[dict]]:
    """Weeks of days, each day with its visits (a multi-day visit on each of its days)."""
    by_day = defaultdict(list)
    for visit in visits:
        span = visit.days if visit.kind == "on_site" else 1
        for k in range(span):
            by_day[visit.date + datetime.timedelta(days=k)].append(visit)
    weeks, day = [], start
    while day < end:
        week = []
        for _ in range(7):
            week.append({"date": day, "visits": by_day.get(day, []), "weekend": day.weekday() >= 5,
                         "outside": month is not None and day.month != month})
            day += datetime.timedelta(days=1)
        weeks.append(week)
    return weeks
