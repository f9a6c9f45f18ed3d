"""Subject-level KRI input from the study database: for each subject, the numerator and the
denominator a KRI definition asks for (`{"source": ..., "filters": {...}, "sum": ...}`).

Every count is an SQL GROUP BY subject, so the database does the row work and Python only sees
one number per subject; the engine (sdv.kri) then sums per site with numpy. The counts over data
points (AEs, lab results, data points) of every KRI are taken in one scan, each under its own
FILTER condition. A definition naming a
source, filter or field that does not exist raises KriInputError with a plain message.

Where each figure comes from (as the importers store it):
- subjects: Subject (status; screen failures are subjects with status screen_failed). Days on
  study = last - first participation date + 1 when the subject carries those dates, else from the
  enrolment date to the last visit date (cut at the snapshot date when asked).
- adverse_events: the AE log form's data points, one AE per record (subject, visit, repeat key):
  AE.AETERM; serious when AE.AESER is "Y"; onset AE.AESTDAT (a snapshot cut keeps onsets on or
  before the snapshot date, and so drops AEs without an onset, as gsm does).
- deviations: Deviation (importance important / non_important, category), withdrawn ones left out;
  detected deviations (PatternRecognition) count like reported and imported ones.
- lab_results: data points of the LB form with their CTCAE toxicity grade.
- queries: Query (state; open days = closed, else snapshot, minus created).
- data_points: every data point (changed: version > 1).
A snapshot cut (`"snapshot_cut": true`) keeps what is dated on or before the snapshot date, as
gsm 1.8.4's snapshot of clindata did (lab results and queries of 2018-01-01 are in it).
A count per subject can be turned into 0/1 with `"per_subject": "any"` (participants with 1+ ...).
"""

import datetime
import math

import numpy as np
import pandas as pd
from django.db import connection
from django.db.models import Count, DurationField, Exists, ExpressionWrapper, F, Max, OuterRef, Q, Value
from django.db.models.functions import Coalesce

from deviations.models import Deviation
from queries.models import Query
from sdv.kri import KriInputError
from studies.models import DataPoint, FormDefinition, ItemDefinition, Study, Subject, SubjectVisit

AE_TERM, AE_SERIOUS, AE_ONSET = "AE.AETERM", "AE.AESER", "AE.AESTDAT"
TREATMENT_COMPLETION = "SDRGCOMP.SDRGYN"
LAB_FORM = "LB"
POPULATIONS = ("enrolled", "screened")
SPEC_KEYS = {"source", "filters", "sum", "snapshot_cut", "per_subject"}
SUBJECT_FIELDS = ("days_on_study", "enrolled", "screened", "screen_failed", "discontinued_study",
                  "discontinued_treatment")
UNAVAILABLE = {"data_pages": "data pages with their entry lag are not imported",
               "pk_samples": "PK sample collection is not imported",
               "ineligible": "eligibility outcome per subject is not derived yet",
               "died_within_90_days": "death dates are not imported"}


def queryset_frame(queryset, columns: list[str]) -> pd.DataFrame:
    """The rows of a values_list() queryset of plain numbers and strings as a DataFrame, fetched
    with the database cursor directly: for 100,000 subjects the ORM's per-value converters cost
    more than the query itself."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return pd.DataFrame.from_records(cursor.fetchall(), columns=columns, coerce_float=True)


def subject_frame(*, study: Study, snapshot: datetime.date, population: str = "enrolled") -> pd.DataFrame:
    """One row per subject of the population (index: subject pk) with site and country."""
    if population not in POPULATIONS:
        raise KriInputError(f"unknown population {population!r}; one of {', '.join(POPULATIONS)}")
    subjects = Subject.objects.filter(study=study)
    if population == "enrolled":
        subjects = subjects.exclude(status__in=[Subject.Status.SCREEN_FAILED, Subject.Status.SCREENING])
    columns = ["pk", "site_id", "site__number", "site__country", "status"]
    frame = queryset_frame(subjects.order_by().values_list(*columns), columns)
    return frame.rename(columns={"site__number": "site", "site__country": "country"}).set_index("pk")


def _days_on_study(study: Study, subjects: pd.DataFrame, snapshot: datetime.date, cut: bool) -> pd.Series:
    # gsm's timeonstudy is last - first participation date + 1, from the dates the EDC records
    # (clindata's firstparticipantdate / lastparticipantdate); where a source gives none, the best
    # estimate is enrolment to the last visit. Read by study (not by a list of 100,000 ids) and
    # the visits aggregated on their own (no join).
    rows = Subject.objects.filter(study=study).values_list("pk", "first_participation_date", "enrolment_date",
                                                           "last_participation_date")
    dates = pd.DataFrame.from_records(list(rows), columns=["pk", "first", "enrolment", "last"]).set_index("pk")
    visits = (SubjectVisit.objects.filter(study=study, actual_date__isnull=False).order_by()
              .values("subject_id").annotate(last=Max("actual_date")).values_list("subject_id", "last"))
    last_visit = pd.Series(dict(visits), dtype="object").reindex(dates.index)
    first = pd.to_datetime(dates["first"]).fillna(pd.to_datetime(dates["enrolment"]))
    last = pd.to_datetime(dates["last"]).fillna(pd.to_datetime(last_visit))
    last = last.fillna(pd.Timestamp(snapshot))  # no visit recorded yet: on study until the snapshot
    if cut:
        last = last.clip(upper=pd.Timestamp(snapshot))
    days = ((last - first).dt.days + 1).clip(lower=0)
    return days.fillna(0).reindex(subjects.index, fill_value=0)


def _subject_field(study, subjects: pd.DataFrame, name: str, snapshot, cut: bool) -> pd.Series:
    status = subjects["status"]
    if name == "days_on_study":
        return _days_on_study(study, subjects, snapshot, cut)
    if name in ("enrolled", "screened"):
        return pd.Series(1.0, index=subjects.index)
    if name == "screen_failed":
        return (status == Subject.Status.SCREEN_FAILED).astype("float64")
    if name == "discontinued_study":
        return (status == Subject.Status.DISCONTINUED).astype("float64")
    if name == "discontinued_treatment":
        stopped = set(DataPoint.objects.filter(study=study, item__oid=TREATMENT_COMPLETION, raw_value="N")
                      .values_list("subject_id", flat=True))
        return pd.Series(subjects.index.isin(stopped).astype("float64"), index=subjects.index)
    if name in UNAVAILABLE:
        raise KriInputError(f"subject field {name!r} is not available: {UNAVAILABLE[name]}")
    raise KriInputError(f"unknown subject field {name!r}; one of {', '.join(SUBJECT_FIELDS)}")


def _per_subject(queryset) -> pd.Series:
    rows = queryset.order_by().values("subject_id").annotate(n=Count("pk")).values_list("subject_id", "n")
    return queryset_frame(rows, ["subject", "n"]).set_index("subject")["n"].astype("float64")


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KriInputError(f"filter {name} must be a number, not {value!r}")
    return value


def _check_choice(name: str, values: list, known: list[str]) -> None:
    wrong = [v for v in values if v not in known]
    if wrong:
        raise KriInputError(f"unknown {name} {', '.join(map(repr, wrong))}; one of {', '.join(known)}")


def _check_filters(source: str, filters: dict, known: set[str]) -> None:
    unknown = set(filters) - known
    if unknown:
        raise KriInputError(f"unknown filter(s) {', '.join(sorted(unknown))} for {source}; "
                            f"known: {', '.join(sorted(known)) or 'none'}")


def _adverse_events(study, filters: dict, snapshot, cut: bool) -> Q:
    """AEs, one per record: with a snapshot cut the onset data point is the record's marker (an AE
    without onset drops out), else the reported term."""
    items = _item_ids(study)
    condition = Q(item_id=items.get(AE_ONSET if cut else AE_TERM, -1))
    if cut:
        condition &= Q(value_date__lte=snapshot)
    if "serious" in filters:
        serious = Q(Exists(DataPoint.objects.filter(item_id=items.get(AE_SERIOUS, -1), raw_value="Y",
                                                    subject_id=OuterRef("subject_id"), visit_id=OuterRef("visit_id"),
                                                    repeat_key=OuterRef("repeat_key"))))
        condition &= serious if filters["serious"] else ~serious
    return condition


def _item_ids(study) -> dict[str, int]:
    return dict(ItemDefinition.objects.filter(study=study, oid__in=[AE_TERM, AE_SERIOUS, AE_ONSET])
                .values_list("oid", "pk"))


def _deviations(study, filters: dict, snapshot, cut: bool) -> pd.Series:
    # A detected deviation the data no longer supports (withdrawn) is no deviation: not counted.
    deviations = Deviation.objects.filter(study=study, subject__isnull=False).exclude(
        resolution=Deviation.Resolution.WITHDRAWN)
    if "importance" in filters:
        _check_choice("importance", [filters["importance"]], Deviation.Importance.values)
        deviations = deviations.filter(importance=filters["importance"])
    if "category" in filters:
        deviations = deviations.filter(category=filters["category"])
    if cut:
        deviations = deviations.filter(Q(occurred_on__lte=snapshot) | Q(occurred_on__isnull=True))
    return _per_subject(deviations)


def _lab_results(study, filters: dict, snapshot, cut: bool) -> Q:
    form = FormDefinition.objects.filter(study=study, oid=LAB_FORM).values_list("pk", flat=True).first()
    condition = Q(form_id=form or -1)
    if filters.get("graded"):
        condition &= Q(toxicity_grade__isnull=False)
    if "grade_at_least" in filters:
        condition &= Q(toxicity_grade__gte=_number(filters["grade_at_least"], "grade_at_least"))
    if cut:
        condition &= Q(collected_at__date__lte=snapshot)
    return condition


def _queries(study, filters: dict, snapshot, cut: bool) -> pd.Series:
    queries = Query.objects.filter(study=study)
    if "state" in filters:
        states = filters["state"] if isinstance(filters["state"], list) else [filters["state"]]
        _check_choice("state", states, Query.State.values)
        queries = queries.filter(state__in=states)
    if cut:
        queries = queries.filter(created_at__date__lte=snapshot)
    if "open_days_over" in filters:
        # Whole days open (closed, else the snapshot, minus created) over the limit: at least
        # floor(limit) + 1 days, compared in SQL.
        limit = _number(filters["open_days_over"], "open_days_over")
        end = Coalesce("closed_at", Value(datetime.datetime.combine(snapshot, datetime.time(), datetime.UTC)))
        open_for = ExpressionWrapper(end - F("created_at"), output_field=DurationField())
        queries = queries.alias(open_for=open_for).filter(
            open_for__gte=datetime.timedelta(days=math.floor(limit) + 1))
    return _per_subject(queries)


def _data_points(study, filters: dict, snapshot, cut: bool) -> Q | None:
    return Q(version__gt=1) if filters.get("changed") else None


def _data_point_counts(study, conditions: list) -> list[pd.Series]:
    """Counts per subject of the study's data points under each condition (None: all of them),
    in one scan of the table (COUNT ... FILTER per condition) rather than one scan per KRI."""
    counts = {f"n{i}": Count("pk", filter=condition) if condition is not None else Count("pk")
              for i, condition in enumerate(conditions)}
    if connection.vendor == "postgresql":  # room to aggregate in memory, not by an on-disk sort
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '64MB'")
    rows = DataPoint.objects.filter(study=study).order_by().values("subject_id").annotate(**counts)
    frame = queryset_frame(rows.values_list("subject_id", *counts), ["subject", *counts])
    frame = frame.set_index("subject").astype("float64")
    return [frame[name] for name in counts]


SOURCES = {"adverse_events": _adverse_events, "deviations": _deviations, "lab_results": _lab_results,
           "queries": _queries, "data_points": _data_points}
DATA_POINT_SOURCES = ("adverse_events", "lab_results", "data_points")  # conditions on one scan
FILTERS = {"adverse_events": {"serious"}, "deviations": {"importance", "category"},
           "lab_results": {"graded", "grade_at_least"}, "queries": {"state", "open_days_over"},
           "data_points": {"changed"}}


def check_measure_spec(spec) -> None:
    """What can be checked of a numerator or denominator without reading the study: its keys,
    source, filter names and summed field. A source the product does not import yet (data pages,
    PK samples) passes: it is reported as unavailable when the snapshot is computed."""
    if not isinstance(spec, dict) or "source" not in spec:
        raise KriInputError(f"a numerator or denominator needs a source: {spec!r}")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise KriInputError(f"unknown key(s) {', '.join(sorted(unknown))} in {spec!r}; known: "
                            f"{', '.join(sorted(SPEC_KEYS))}")
    source, filters = spec["source"], spec.get("filters") or {}
    if not isinstance(filters, dict):
        raise KriInputError(f"filters must be an object, not {filters!r}")
    if spec.get("per_subject", "count") not in ("count", "any"):
        raise KriInputError(f"per_subject is count or any, not {spec['per_subject']!r}")
    if source == "subjects":
        if spec.get("sum") not in (*SUBJECT_FIELDS, *UNAVAILABLE):
            raise KriInputError(f"unknown subject field {spec.get('sum')!r}; one of {', '.join(SUBJECT_FIELDS)}")
    elif source in SOURCES:
        if "sum" in spec:
            raise KriInputError(f"{source} are counted; \"sum\" is only for subjects")
        _check_filters(source, filters, FILTERS[source])
    elif source not in UNAVAILABLE:
        raise KriInputError(f"unknown source {source!r}; one of subjects, {', '.join(SOURCES)}")


def measure_available(spec) -> bool:
    """Whether a numerator or denominator reads data the product has (nothing read yet)."""
    try:
        check_measure_spec(spec)
    except KriInputError:
        return False
    return spec["source"] not in UNAVAILABLE and spec.get("sum") not in UNAVAILABLE


def subject_measures(*, study: Study, specs: list[dict], subjects: pd.DataFrame,
                     snapshot: datetime.date) -> list[np.ndarray]:
    """The numerator or denominator of each subject of `subjects` (in its order), for each spec.
    Those counted over data points share one scan; the others are one query each. A spec that
    cannot be computed raises KriInputError (use one spec per call to tell which)."""
    values, scanned = [None] * len(specs), []
    for i, spec in enumerate(specs):
        check_measure_spec(spec)
        source, filters, cut = spec["source"], spec.get("filters") or {}, bool(spec.get("snapshot_cut"))
        if source in UNAVAILABLE:
            raise KriInputError(f"source {source!r} is not available: {UNAVAILABLE[source]}")
        if source == "subjects":
            values[i] = _subject_field(study, subjects, spec["sum"], snapshot, cut)
        elif source in DATA_POINT_SOURCES:
            scanned.append((i, SOURCES[source](study, filters, snapshot, cut)))
        else:
            values[i] = SOURCES[source](study, filters, snapshot, cut)
    if scanned:
        for (i, _), counts in zip(scanned, _data_point_counts(study, [c for _, c in scanned]), strict=True):
            values[i] = counts
    return [_per_subject_values(spec, series, subjects) for spec, series in zip(specs, values, strict=True)]


def subject_measure(*, study: Study, spec: dict, subjects: pd.DataFrame, snapshot: datetime.date) -> np.ndarray:
    """The numerator or denominator of each subject of `subjects` (in its order), per `spec`."""
    return subject_measures(study=study, specs=[spec], subjects=subjects, snapshot=snapshot)[0]


def _per_subject_values(spec: dict, values: pd.Series, subjects: pd.DataFrame) -> np.ndarray:
    values = values.reindex(subjects.index, fill_value=0)
    if spec.get("per_subject") == "any":  # subjects with at least one (e.g. 1+ important deviation)
        values = (values > 0).astype("float64")
    return values.to_numpy(dtype="float64")
