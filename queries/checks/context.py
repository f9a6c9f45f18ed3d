"""What one analyzer pass reads: the study's data as frames, limited to what the pass covers.

A full pass reads everything its rules need. An incremental pass reads only what changed since
the previous pass: the changed data points for rules about one data point (range, codelist...),
and every relevant row of the changed subjects for rules that compare data points (date order,
consistency, duplicates...). Each read is one SQL statement returning only the columns used."""

from datetime import date, datetime

import pandas as pd
from django.db import connection
from django.utils import timezone

from studies.models import DataPoint, ItemDefinition, Study, Subject, SubjectVisit, VisitDefinition

POINT_COLUMNS = ["id", "subject_id", "visit_id", "form_id", "item_id", "repeat_key", "raw_value", "value_number",
                 "value_date", "units", "normal_low", "normal_high"]


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _ints(values) -> str:
    """An SQL list of integers, inlined: ids only, each passed through int()."""
    return ", ".join(str(int(v)) for v in values) or "NULL"


def frame_from_sql(sql: str, params: list, columns: list[str]) -> pd.DataFrame:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)


def as_dates(series: pd.Series) -> pd.Series:
    # SQLite hands dates back as text, PostgreSQL as date objects: one type for the rules.
    return pd.to_datetime(series, errors="coerce")


def changed_since(study: Study, since: datetime) -> tuple[set[int], set[int]]:
    """Data points, and subjects (through their data points, visits or own dates), changed at or
    after `since`, from the history tables (indexed on history_date)."""
    points: set[int] = set()
    subjects: set[int] = set()
    for model, column, into in ((DataPoint, "id", points), (DataPoint, "subject_id", subjects),
                                (SubjectVisit, "subject_id", subjects), (Subject, "id", subjects)):
        history = model.history.model
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT DISTINCT {column} FROM {_table(history)} "
                           "WHERE study_id = %s AND history_date >= %s", [study.pk, since])
            into.update(row[0] for row in cursor.fetchall())
    return points, subjects


class Context:
    def __init__(self, study: Study, *, today: date, changed_points: set[int] | None = None,
                 changed_subjects: set[int] | None = None):
        self.study = study
        self.today = today
        self.now = timezone.now()
        self.full = changed_points is None
        self.changed_points = changed_points or set()
        self.changed_subjects = changed_subjects or set()
        self.items = {item.pk: item for item in ItemDefinition.objects.filter(study=study).select_related("form")}
        self.items_by_oid = {item.oid: item for item in self.items.values()}
        self._frames: dict[str, pd.DataFrame] = {}  # subjects and visits: read once per pass

    def _scope(self, *, local: bool, id_column: str = "id", subject_column: str = "subject_id") -> str:
        if self.full:
            return ""
        if local:
            return f" AND {id_column} IN ({_ints(self.changed_points)})"
        return f" AND {subject_column} IN ({_ints(self.changed_subjects)})"

    def points(self, item_ids, *, local: bool, form_ids=()) -> pd.DataFrame:
        """Stored values (not those flagged missing in the source) of `item_ids` and/or of every
        item of `form_ids`."""
        conditions = []
        if item_ids:
            conditions.append(f"item_id IN ({_ints(item_ids)})")
        if form_ids:
            conditions.append(f"form_id IN ({_ints(form_ids)})")
        if not conditions:
            return pd.DataFrame(columns=POINT_COLUMNS)
        sql = (f"SELECT {', '.join(POINT_COLUMNS)} FROM {_table(DataPoint)} WHERE study_id = %s "
               f"AND missing_in_source = %s AND ({' OR '.join(conditions)}){self._scope(local=local)}")
        frame = frame_from_sql(sql, [self.study.pk, False], POINT_COLUMNS)
        frame["value_date"] = as_dates(frame["value_date"])
        frame["value_number"] = pd.to_numeric(frame["value_number"], errors="coerce")
        return frame

    def points_outside(self, limits: pd.DataFrame, *, normal_range: bool = False) -> pd.DataFrame:
        """Numeric values outside [low, high] of their check, non-numeric ones, and ones in units
        other than the check's; with `normal_range`, also those outside their own normal range.
        `limits` has check_id, item_id, low, high, units. Evaluated in the database: only the
        suspicious rows come back (a lab table holds millions of values, nearly all fine)."""
        if limits.empty:
            return pd.DataFrame(columns=["check_id", *POINT_COLUMNS])
        row = "(CAST(%s AS integer), CAST(%s AS integer), CAST(%s AS double precision), " \
              "CAST(%s AS double precision), CAST(%s AS varchar(64)))"
        values, params = [], []
        for check_id, item_id, low, high, units in limits[["check_id", "item_id", "low", "high", "units"]].itertuples(
                index=False, name=None):
            values.append(row)
            params += [int(check_id), int(item_id), -1e300 if pd.isna(low) else float(low),
                       1e300 if pd.isna(high) else float(high), units or ""]
        normal = " OR d.value_number < d.normal_low OR d.value_number > d.normal_high" if normal_range else ""
        columns = ", ".join(f"d.{c}" for c in POINT_COLUMNS)
        sql = (f"WITH c (check_id, item_id, low, high, units) AS (VALUES {', '.join(values)}) "
               f"SELECT c.check_id, {columns} FROM {_table(DataPoint)} d JOIN c ON d.item_id = c.item_id "
               # The items again as literals: the planner then knows how many rows they hold
               f"WHERE d.study_id = %s AND d.item_id IN ({_ints(limits['item_id'].unique())}) "
               f"AND d.missing_in_source = %s AND d.raw_value <> '' AND ("
               f"d.value_number IS NULL OR d.value_number < c.low OR d.value_number > c.high"
               f" OR (d.units <> '' AND d.units <> c.units){normal})"
               f"{self._scope(local=True, id_column='d.id')}")
        frame = frame_from_sql(sql, [*params, self.study.pk, False], ["check_id", *POINT_COLUMNS])
        frame["value_number"] = pd.to_numeric(frame["value_number"], errors="coerce")
        return frame

    def subjects(self) -> pd.DataFrame:
        """The subjects in scope, read once per pass (several rule types anchor on them); the
        frame is shared: callers derive from it, never change it in place."""
        if "subjects" in self._frames:
            return self._frames["subjects"]
        columns = ["id", "site_id", "consent_date", "enrolment_date"]
        frame = frame_from_sql(f"SELECT {', '.join(columns)} FROM {_table(Subject)} WHERE study_id = %s"
                               f"{self._scope(local=False, subject_column='id')}", [self.study.pk], columns)
        for column in ("consent_date", "enrolment_date"):
            frame[column] = as_dates(frame[column])
        self._frames["subjects"] = frame
        return frame

    def visits(self) -> pd.DataFrame:
        """The visits in scope with their definitions, read once per pass, shared as subjects()."""
        if "visits" in self._frames:
            return self._frames["visits"]
        columns = ["id", "subject_id", "definition_id", "repeat_key", "actual_date", "oid", "planned_day",
                   "window_before", "window_after"]
        sql = (f"SELECT v.id, v.subject_id, v.definition_id, v.repeat_key, v.actual_date, d.oid, d.planned_day, "
               f"d.window_before, d.window_after FROM {_table(SubjectVisit)} v "
               f"JOIN {_table(VisitDefinition)} d ON d.id = v.definition_id WHERE v.study_id = %s"
               f"{self._scope(local=False, subject_column='v.subject_id')}")
        frame = frame_from_sql(sql, [self.study.pk], columns)
        frame["actual_date"] = as_dates(frame["actual_date"])
        self._frames["visits"] = frame
        return frame
