"""What the detectors read, as pandas frames, each fetched by one set-based SQL statement (on
PostgreSQL streamed out by COPY and parsed by Arrow): subjects, dated visits, and the log-form
records (exposure, concomitant medications, serious AEs, unmet criteria) pivoted in SQL from their
data points, one row per record (subject, visit, repeat key). No per-subject query.

Item names default to what the importers store (SDTM: EX.EXDOSE, EX.EXSTDTC...; clindata:
EX.EXSTDAT...); the plan's `data` section names other items (an ODM study's own OIDs)."""

import io
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from django.db import connection

from studies.models import DataPoint, FormDefinition, ItemDefinition, Subject, SubjectVisit, VisitDefinition

DEFAULT_ITEMS = {
    "exposure": {"dose": ["EX.EXDOSE"], "units": ["EX.EXDOSU"], "start": ["EX.EXSTDTC", "EX.EXSTDAT"],
                 "end": ["EX.EXENDTC", "EX.EXENDAT"]},
    "con_meds": {"decod": ["CM.CMDECOD"], "term": ["CM.CMTRT"], "start": ["CM.CMSTDTC"], "end": ["CM.CMENDTC"]},
    "adverse_events": {"serious": ["AE.AESER"], "onset": ["AE.AESTDTC", "AE.AESTDAT"], "reported": []},
}
YES = ("Y", "YES", "1", "TRUE")
RECORD = ["subject", "visit", "repeat_key"]


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def sql_frame(sql: str, params: list, columns: dict[str, str]) -> pd.DataFrame:
    """The rows of `sql` as a DataFrame with `columns` ({name: "int" | "str" | "date"}): on
    PostgreSQL by COPY ... TO STDOUT, read by Arrow's CSV parser; elsewhere by the cursor."""
    if connection.vendor == "postgresql":
        buffer = io.BytesIO()
        with connection.cursor() as cursor, connection.wrap_database_errors:
            with cursor.cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as copy:
                for chunk in copy:
                    buffer.write(chunk)
        types = {"int": pa.int64(), "str": pa.string(), "date": pa.date32()}
        if not buffer.getvalue():
            return pd.DataFrame({name: pd.Series(dtype={"int": "Int64", "str": object, "date": "datetime64[ns]"}[t])
                                 for name, t in columns.items()})
        table = pa_csv.read_csv(
            io.BytesIO(buffer.getvalue()),
            read_options=pa_csv.ReadOptions(column_names=list(columns)),
            convert_options=pa_csv.ConvertOptions(column_types={n: types[t] for n, t in columns.items()},
                                                  strings_can_be_null=False, quoted_strings_can_be_null=False))
        frame = table.to_pandas()
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            frame = pd.DataFrame.from_records(cursor.fetchall(), columns=list(columns))
    for name, kind in columns.items():
        if kind == "date":
            frame[name] = pd.to_datetime(frame[name], errors="coerce")
        elif kind == "str":
            frame[name] = frame[name].fillna("").astype(str)
        elif kind == "int":
            frame[name] = pd.to_numeric(frame[name]).astype("Int64")
    return frame


def text_dates(values: pd.Series, partial: str = "") -> pd.Series:
    """ISO 8601 dates (or date-times) from text; bad ones are missing (NaT). A partial date
    (2013-11, 2013) is missing too, unless `partial` says which end of its month or year to take:
    "first" for a start (the earliest it can be), "last" for an end (the latest)."""
    text = values.fillna("").astype(str).str.strip().str.slice(0, 10)
    dates = pd.to_datetime(text.where(text.str.len() == 10), errors="coerce", format="%Y-%m-%d")
    if partial:
        month = pd.to_datetime(text.where(text.str.fullmatch(r"\d{4}-\d{2}")), errors="coerce", format="%Y-%m")
        year = pd.to_datetime(text.where(text.str.fullmatch(r"\d{4}")), errors="coerce", format="%Y")
        if partial == "last":
            month, year = month + pd.offsets.MonthEnd(0), year + pd.offsets.YearEnd(0)
        dates = dates.fillna(month).fillna(year)
    return dates


@dataclass
class StudyData:
    subjects: pd.DataFrame  # index subject pk: site, subject_id, status, consent, first_dose, arm, enrolment
    visits: pd.DataFrame  # visit, subject, definition, name, repeat_key, date (dated visits only)
    exposure: pd.DataFrame = field(default_factory=pd.DataFrame)
    con_meds: pd.DataFrame = field(default_factory=pd.DataFrame)
    adverse_events: pd.DataFrame = field(default_factory=pd.DataFrame)
    unmet_criteria: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: dict = field(default_factory=dict)  # what could not be read, said plainly

    def treatment_end(self) -> pd.Series:
        """Per subject the last exposure date (end, else start), where exposure was read."""
        if self.exposure.empty:
            return pd.Series(dtype="datetime64[ns]")
        last = self.exposure["end"].fillna(self.exposure["start"])
        return last.groupby(self.exposure["subject"]).max()


def read_subjects(study) -> pd.DataFrame:
    sql = (f"SELECT id, site_id, subject_id, status, consent_date, first_dose_date, arm, enrolment_date "
           f"FROM {_table(Subject)} WHERE study_id = %s")
    frame = sql_frame(sql, [study.pk], {"subject": "int", "site": "int", "subject_id": "str", "status": "str",
                                         "consent": "date", "first_dose": "date", "arm": "str", "enrolment": "date"})
    return frame.set_index("subject")


def _visits(study) -> pd.DataFrame:
    sql = (f"SELECT id, subject_id, definition_id, repeat_key, actual_date FROM {_table(SubjectVisit)} "
           f"WHERE study_id = %s AND actual_date IS NOT NULL")
    frame = sql_frame(sql, [study.pk], {"visit": "int", "subject": "int", "definition": "int", "repeat_key": "str",
                                         "date": "date"})
    names = dict(VisitDefinition.objects.filter(study=study).values_list("pk", "name"))
    frame["name"] = frame["definition"].map(names).fillna("").astype(str)
    return frame


def _item_ids(study, wanted: dict[str, list[str]]) -> dict[str, int]:
    oids = {oid for candidates in wanted.values() for oid in candidates}
    stored = dict(ItemDefinition.objects.filter(study=study, oid__in=oids).values_list("oid", "pk"))
    return {name: next((stored[o] for o in candidates if o in stored), None) for name, candidates in wanted.items()}


def _records(study, items: dict[str, int | None], *, having: str = "", having_params=(), entered: bool = False):
    """One row per record (subject, visit, repeat key) with a text column per item, pivoted in SQL."""
    present = {name: pk for name, pk in items.items() if pk is not None}
    columns = [f"MAX(CASE WHEN item_id = %s THEN raw_value END) AS c_{name}" for name in present]
    params = list(present.values())
    if entered:
        columns.append("MIN(entered_at) AS entered_at")
    sql = (f"SELECT subject_id, visit_id, repeat_key, {', '.join(columns)} FROM {_table(DataPoint)} "
           f"WHERE study_id = %s AND missing_in_source = %s AND item_id IN ({', '.join(['%s'] * len(present))}) "
           f"GROUP BY subject_id, visit_id, repeat_key {having}")
    params += [study.pk, False, *present.values(), *having_params]
    types = {"subject": "int", "visit": "int", "repeat_key": "str", **{name: "str" for name in present}}
    if entered:
        types["entered_at"] = "str"
    frame = sql_frame(sql, params, types)
    for name in items:
        if name not in frame:
            frame[name] = ""
    return frame


def read_exposure(study, plan: dict, data: StudyData) -> None:
    wanted = {**DEFAULT_ITEMS["exposure"],
              **{k: [v] for k, v in (plan.get("data", {}).get("exposure") or {}).items()}}
    items = _item_ids(study, wanted)
    if items["dose"] is None:
        data.notes["exposure"] = f"no exposure dose item ({', '.join(wanted['dose'])}) in the study"
        return
    frame = _records(study, items)
    frame["dose_text"] = frame["dose"].str.strip()
    frame["dose"] = pd.to_numeric(frame["dose_text"], errors="coerce")
    frame["start"], frame["end"] = text_dates(frame["start"]), text_dates(frame["end"])
    data.exposure = frame


def _con_meds(study, plan: dict, data: StudyData) -> None:
    names = sorted({m["name"].strip().upper() for m in plan.get("prohibited_medications") or []})
    wanted = {**DEFAULT_ITEMS["con_meds"], **{k: [v] for k, v in (plan.get("data", {}).get("con_meds") or {}).items()}}
    items = _item_ids(study, wanted)
    if not names or (items["decod"] is None and items["term"] is None):
        if names:
            data.notes["con_meds"] = "no concomitant medication items (CMDECOD / CMTRT) in the study"
        return
    # Only the records of a prohibited drug leave the database.
    tests = [f"UPPER(TRIM(MAX(CASE WHEN item_id = %s THEN raw_value END))) IN ({', '.join(['%s'] * len(names))})"
             for name in ("decod", "term") if items[name] is not None]
    params = [p for name in ("decod", "term") if items[name] is not None for p in (items[name], *names)]
    frame = _records(study, items, having=f"HAVING {' OR '.join(tests)}", having_params=params)
    frame["start"], frame["end"] = text_dates(frame["start"], "first"), text_dates(frame["end"], "last")
    data.con_meds = frame


def _adverse_events(study, plan: dict, data: StudyData) -> None:
    wanted = {**DEFAULT_ITEMS["adverse_events"],
              **{k: [v] for k, v in (plan.get("data", {}).get("adverse_events") or {}).items()}}
    items = _item_ids(study, wanted)
    if items["serious"] is None:
        data.notes["adverse_events"] = "no AE seriousness item (AESER) in the study"
        return
    having = f"HAVING UPPER(MAX(CASE WHEN item_id = %s THEN raw_value END)) IN ({', '.join(['%s'] * len(YES))})"
    frame = _records(study, items, having=having, having_params=[items["serious"], *YES], entered=True)
    frame["onset"] = text_dates(frame["onset"])
    entered = pd.to_datetime(frame["entered_at"].str.slice(0, 10), errors="coerce", format="%Y-%m-%d")
    frame["reported"] = text_dates(frame["reported"]).fillna(entered)
    data.adverse_events = frame


def _unmet_criteria(study, plan: dict, data: StudyData) -> None:
    """The criteria not met, one row each (subject, visit, repeat key, criterion, value). SDTM IE
    holds only criteria not met: every IE data point is one. clindata's raw I/E form holds every
    criterion with its answer: an inclusion answered 0/N or an exclusion answered 1/Y is not met.
    A plan may name one yes/no item instead (`data.eligibility`: item and its not-met values)."""
    mapping = plan.get("data", {}).get("eligibility") or {}
    if mapping.get("item"):
        item = ItemDefinition.objects.filter(study=study, oid=mapping["item"]).values_list("pk", flat=True).first()
        if item is None:
            data.notes["eligibility"] = f"no item {mapping['item']} in the study"
            return
        frame = _records(study, {"value": item})
        not_met = {v.upper() for v in mapping.get("not_met") or ["N", "NO", "0"]}
        frame = frame[frame["value"].str.strip().str.upper().isin(not_met)].assign(criterion=mapping["item"])
        data.unmet_criteria = frame
        return
    items = _item_ids(study, {"category": ["IE.IECAT"], "result": ["IE.IEORRES"]})
    if items["category"] is not None and items["result"] is not None:  # raw EDC shape (clindata)
        frame = _records(study, items)
        category, result = frame["category"].str.upper(), frame["result"].str.strip().str.upper()
        unmet = (category.str.startswith("INCL") & result.isin(["0", "N", "NO"])) | (
            category.str.startswith("EXCL") & result.isin(["1", "Y", "YES"]))
        data.unmet_criteria = frame[unmet].assign(criterion=frame["category"], value=frame["result"])
        return
    form = FormDefinition.objects.filter(study=study, oid="IE").values_list("pk", flat=True).first()
    if form is None:
        data.notes["eligibility"] = "no IE form in the study"
        return
    sql = (f"SELECT d.subject_id, d.visit_id, d.repeat_key, i.oid, d.raw_value FROM {_table(DataPoint)} d "
           f"JOIN {_table(ItemDefinition)} i ON i.id = d.item_id "
           f"WHERE d.study_id = %s AND d.form_id = %s AND d.missing_in_source = %s AND d.raw_value <> ''")
    frame = sql_frame(sql, [study.pk, form, False], {"subject": "int", "visit": "int", "repeat_key": "str",
                                                      "criterion": "str", "value": "str"})
    frame["criterion"] = frame["criterion"].str.removeprefix("IE.")
    data.unmet_criteria = frame


def study_data(*, study, plan: dict) -> StudyData:
    """Everything the plan's detectors need, read set-based; what cannot be read is in `notes`."""
    data = StudyData(subjects=read_subjects(study), visits=_visits(study))
    if "dosing" in plan or "prohibited_medications" in plan or "consent" in plan:
        read_exposure(study, plan, data)
    if plan.get("prohibited_medications"):
        _con_meds(study, plan, data)
    if "safety" in plan:
        _adverse_events(study, plan, data)
    if (plan.get("eligibility") or {}).get("criteria_not_met_is_deviation"):
        _unmet_criteria(study, plan, data)
    return data
