"""The Gilead clindata study (Gilead-BioStats/clindata, Apache-2.0) from its parquet tables.

Set-based throughout: each table is read with pandas, reshaped to the rows of one model, and
compared with what is stored (`_sync`), so a re-run writes nothing new. Data points go through the
DataPointWriter's frame path (COPY on PostgreSQL). clindata has no visit schedule, no query text
and some deviations of subjects absent from the demography table: what is derived or skipped is
said in the docstrings below and in the Import's warnings."""

import re
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from django.db import models

from deviations.coding import code_source_category
from deviations.models import Deviation
from queries.models import Query
from studies.audit import set_audit
from studies.ingest.base import ImportFailed, ImportRun, definitions_sync, import_create, import_execute
from studies.ingest.writer import DataPointWriter
from studies.models import (
    FormDefinition,
    Import,
    ItemDefinition,
    Site,
    Study,
    Subject,
    SubjectVisit,
    VisitDefinition,
)

TABLES = ("ctms_study", "ctms_site", "rawplus_dm", "rawplus_enroll", "rawplus_consent", "rawplus_visdt",
          "rawplus_ae", "rawplus_lb", "rawplus_ie", "rawplus_ex", "rawplus_studcomp", "rawplus_sdrgcomp",
          "edc_queries", "ctms_protdev")
# Read where present (the demo subset predates them): rawplus_ixrsrand, the IXRS randomisation,
# gives each randomised subject's treatment group code (trtgrpc), stored as the subject's arm.
OPTIONAL_TABLES = ("rawplus_ixrsrand",)

# Country name -> (ISO 3166-1 alpha-2, the site time zone assumed when the CTMS gives none: the
# country's most populous zone). clindata has US, China and Japan; the rest is for other extracts.
COUNTRIES = {
    "US": ("US", "America/New_York"), "USA": ("US", "America/New_York"),
    "United States": ("US", "America/New_York"), "China": ("CN", "Asia/Shanghai"), "Japan": ("JP", "Asia/Tokyo"),
    "Canada": ("CA", "America/Toronto"), "United Kingdom": ("GB", "Europe/London"), "UK": ("GB", "Europe/London"),
    "Germany": ("DE", "Europe/Berlin"), "France": ("FR", "Europe/Paris"), "Spain": ("ES", "Europe/Madrid"),
    "Italy": ("IT", "Europe/Rome"), "Australia": ("AU", "Australia/Sydney"), "Korea": ("KR", "Asia/Seoul"),
    "South Korea": ("KR", "Asia/Seoul"), "Taiwan": ("TW", "Asia/Taipei"), "India": ("IN", "Asia/Kolkata"),
}
LANGUAGES = {"CN": "zh", "JP": "ja", "DE": "de", "FR": "fr", "ES": "es", "IT": "it", "KR": "ko", "TW": "zh"}

DEVIATION_CATEGORIES = {
    "INFORMED CONSENT": Deviation.Category.INFORMED_CONSENT,
    "ELIGIBILITY CRITERIA": Deviation.Category.ELIGIBILITY,
    "WRONG TREATMENT OR INCORRECT DOSE": Deviation.Category.IP_DOSING,
    "OTHER TREATMENT COMPLIANCE ISSUE": Deviation.Category.IP_DOSING,
    "EXCLUDED CONCOMITANT MEDICATION": Deviation.Category.PROHIBITED_MEDICATION,
    "OFF SCHEDULE PROCEDURE": Deviation.Category.VISIT_WINDOW,
}
QUERY_STATES = {"Open": Query.State.OPEN, "Answered": Query.State.ANSWERED, "Closed": Query.State.CLOSED,
                "Cancelled": Query.State.CANCELLED}
LOG_VISIT = "LOG"  # subject-level log forms (AE, exposure, I/E, consent, enrolment, disposition)

# form oid -> (name, {source column: (item oid, label, data type)})
LOG_FORMS = {
    "AE": ("Adverse events", {
        # The reported term is masked ("XXX") in clindata; the MedDRA preferred term is not
        "aeterm": ("AETERM", "Reported term", "text"), "mdrpt_nsv": ("AEDECOD", "MedDRA preferred term", "text"),
        "aeser": ("AESER", "Serious", "text"),
        "aest_dt": ("AESTDAT", "Start date", "date"), "aeen_dt": ("AEENDAT", "End date", "date"),
        "aetoxgr": ("AETOXGR", "Toxicity grade / severity", "text")}),
    "EX": ("Study drug administration", {
        "extrt": ("EXTRT", "Treatment", "text"), "exds": ("EXDOSE", "Dose", "float"),
        "exdsu": ("EXDOSU", "Dose unit", "text"), "exst_dt": ("EXSTDAT", "Start date", "date"),
        "exen_dt": ("EXENDAT", "End date", "date")}),
    "IE": ("Inclusion / exclusion", {"ieorres": ("IEORRES", "Criterion met", "text"),
                                     "iecat": ("IECAT", "Category", "text"),
                                     "tiver": ("TIVER", "Protocol version", "text")}),
    "IC": ("Informed consent", {"consdt": ("CONSDT", "Consent date", "date"), "conscat": ("CONSCAT", "Consent", "text"),
                                "consyn": ("CONSYN", "Consented", "text")}),
    "ENROLL": ("Enrolment", {"enroll_dt": ("ENROLDT", "Enrolment / screening date", "date"),
                             "enrollyn": ("ENROLLYN", "Enrolled", "text"),
                             "sfreas": ("SFREAS", "Screen failure reason", "text")}),
    "STUDCOMP": ("Study completion", {"compyn": ("COMPYN", "Completed the study", "text"),
                                      "compreas": ("COMPREAS", "Reason not completed", "text")}),
    "SDRGCOMP": ("Study drug completion", {"sdrgyn": ("SDRGYN", "Completed study drug", "text"),
                                           "sdrgreas": ("SDRGREAS", "Reason not completed", "text")}),
}


# rawplus_lb is the one big table (1.1 M rows). The load reads only these of its columns, the
# repeated strings as categoricals (a few dozen values each) and the dates as datetime64: some
# 40 MB in memory instead of 400 MB of Python strings and dates.
LAB_COLUMNS = ("subjid", "visnam", "lb_dt", "battrnam", "lbtstnam", "siresn", "sinrlo", "sinrhi", "toxgrg_nsv",
               "alertsimplified")


def read_tables(directory: Path, *, all_columns: bool = False) -> dict[str, pd.DataFrame]:
    """The clindata tables; with `all_columns` every column of rawplus_lb as stored (for a subset
    written back to parquet), else only those the load reads."""
    missing = [name for name in TABLES if not (directory / f"{name}.parquet").is_file()]
    if missing:
        raise ImportFailed(f"Missing clindata table(s): {', '.join(missing)}", where=str(directory))
    tables = {name: pd.read_parquet(directory / f"{name}.parquet") for name in TABLES if name != "rawplus_lb"}
    if all_columns:
        tables["rawplus_lb"] = pd.read_parquet(directory / "rawplus_lb.parquet")
    else:
        lab = pq.read_table(directory / "rawplus_lb.parquet", columns=list(LAB_COLUMNS),
                            read_dictionary=[c for c in LAB_COLUMNS if c not in ("lb_dt", "siresn")])
        tables["rawplus_lb"] = lab.to_pandas(date_as_object=False)
    return {name: tables[name] for name in TABLES}


def read_optional_tables(directory: Path) -> dict[str, pd.DataFrame]:
    """The OPTIONAL_TABLES present in `directory`."""
    return {name: pd.read_parquet(directory / f"{name}.parquet") for name in OPTIONAL_TABLES
            if (directory / f"{name}.parquet").is_file()}


def restrict_to_subjects(tables: dict[str, pd.DataFrame], subjids: set[str]) -> dict[str, pd.DataFrame]:
    """The tables cut to some subjects (screen failures of the same sites kept), for tests and the demo."""
    dm = tables["rawplus_dm"]
    dm = dm[dm["subjid"].isin(subjids)]
    sites = set(dm["siteid"])
    nsv = set(dm["subject_nsv"])
    out = dict(tables)
    out["rawplus_dm"] = dm
    out["ctms_site"] = tables["ctms_site"][tables["ctms_site"]["site_num"].isin(sites)]
    enroll = tables["rawplus_enroll"]
    screen_failed_here = (enroll["enrollyn"] != "Y") & enroll["siteid"].isin(sites)
    out["rawplus_enroll"] = enroll[enroll["subjid"].isin(subjids) | screen_failed_here]
    for name in ("rawplus_consent", "rawplus_visdt", "rawplus_ae", "rawplus_lb", "rawplus_ie", "rawplus_ex",
                 "rawplus_studcomp", "rawplus_sdrgcomp", *[t for t in OPTIONAL_TABLES if t in tables]):
        out[name] = tables[name][tables[name]["subjid"].isin(subjids)]
    out["edc_queries"] = tables["edc_queries"][tables["edc_queries"]["subjectname"].isin(nsv)]
    out["ctms_protdev"] = tables["ctms_protdev"][tables["ctms_protdev"]["subjectenrollmentnumber"].isin(subjids)]
    return out


def clindata_import(*, directory: Path, actor, limit_subjects: int | None = None) -> Import:
    """Load clindata from `directory` (its parquet tables); `limit_subjects` keeps the first N
    subjects (by subject id) for quick runs. Idempotent: a re-run writes nothing new."""
    directory = Path(directory)
    record = import_create(source=Import.Source.CLINDATA, actor=actor, filename=directory.name)
    return import_execute(record=record, actor=actor, load=partial(_load, directory=directory,
                                                                     limit_subjects=limit_subjects))


def _load(run: ImportRun, *, directory: Path, limit_subjects: int | None) -> None:
    tables = {**read_tables(directory), **read_optional_tables(directory)}
    if limit_subjects is not None:
        keep = set(sorted(tables["rawplus_dm"]["subjid"])[:limit_subjects])
        tables = restrict_to_subjects(tables, keep)
    study = _study(run, tables["ctms_study"])
    sites = _sites(run, tables["ctms_site"])
    subjects = _subjects(run, tables, sites)
    visits = _visits(run, tables["rawplus_visdt"], subjects)
    _data_points(run, tables, subjects, visits)
    _queries(run, tables["edc_queries"], tables["rawplus_dm"], subjects)
    _deviations(run, tables["ctms_protdev"], subjects)
    run.counts["subjects"] = Subject.objects.filter(study=study).count()
    run.counts["sites"] = Site.objects.filter(study=study).count()


def rows_sync(run: ImportRun, model: type[models.Model], rows: list[dict], *, key: tuple[str, ...],
          scope: dict, label: str) -> dict[tuple, int]:
    """Create the rows not stored yet and update the ones that differ (audited bulk writes);
    returns key -> primary key for every row of the scope."""
    stored = {tuple(getattr(obj, k) for k in key): obj for obj in model.objects.filter(**scope)}
    new, changed = definitions_sync(run, stored=stored, rows={tuple(row[k] for k in key): row for row in rows},
                                    build=lambda _key, row: model(**scope, **row))
    run.counts[f"{label}_created"] += len(new)
    run.counts[f"{label}_changed"] += len(changed)
    return {tuple(values[:-1]): values[-1] for values in model.objects.filter(**scope).values_list(*key, "pk")}


def _dates(series: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(series.astype("string").str.slice(0, 10), errors="coerce", format="ISO8601")
    return parsed.dt.date.astype(object).where(parsed.notna(), None)


def _text(series: pd.Series) -> pd.Series:
    return series.astype("string").fillna("").str.strip()


def _study(run: ImportRun, frame: pd.DataFrame) -> Study:
    row = frame.iloc[0]
    protocol_id = str(row["protocol_number"])
    study = Study.objects.filter(protocol_id=protocol_id).first()
    if study is None:
        study = Study(protocol_id=protocol_id, name=f"clindata: {row['protocol_title']}",
                      sponsor="Gilead-BioStats clindata", phase=str(row["phase"] or "")[:16])
        set_audit(study, actor=run.actor, reason=run.reason)
        study.save()
        run.counts["study_created"] += 1
    return run.attach_study(study)


def _sites(run: ImportRun, frame: pd.DataFrame) -> dict[str, int]:
    rows = []
    for site in frame.itertuples(index=False):
        if site.country not in COUNTRIES:
            raise ImportFailed(f"Unknown country {site.country!r}: add it to COUNTRIES", where=f"site {site.site_num}")
        code, zone = COUNTRIES[site.country]
        rows.append({"number": str(site.site_num), "name": f"{site.account} ({site.state})"[:255],
                     "city": str(site.city)[:128], "country": code, "timezone": zone,
                     "language": LANGUAGES.get(code, "en")})
    stored = rows_sync(run, Site, rows, key=("number",), scope={"study": run.study}, label="sites")
    return {number: pk for (number,), pk in stored.items()}


def _subjects(run: ImportRun, tables: dict, sites: dict[str, int]) -> dict[str, int]:
    """Enrolled subjects from the demography table; screen failures (never given a subject id)
    from the enrolment table under their screening id. Status from enrolment and study completion.
    Screen failures recorded at a site the CTMS does not list (29 in clindata) are skipped."""
    dm, enroll = tables["rawplus_dm"], tables["rawplus_enroll"]
    consent = tables["rawplus_consent"]
    consent = consent[consent["consyn"] == "Y"].assign(consdt=lambda f: _dates(f["consdt"]))
    consent_on = consent.groupby("subjid")["consdt"].min().to_dict()
    enrolled = enroll[enroll["enrollyn"] == "Y"].assign(enroll_dt=lambda f: _dates(f["enroll_dt"]))
    enrolled_on = enrolled.set_index("subjid")["enroll_dt"].to_dict()
    completion = tables["rawplus_studcomp"].set_index("subjid")["compyn"].to_dict()
    status_of = {"Y": Subject.Status.COMPLETED, "N": Subject.Status.DISCONTINUED}
    arm_of = {}
    if "rawplus_ixrsrand" in tables:  # the randomised treatment group: the subject's arm (ARMCD)
        randomised = tables["rawplus_ixrsrand"]  # every row a randomised subject ("Early Terminated" too)
        arm_of = dict(zip(randomised["subjid"], _text(randomised["trtgrpc"]).str.slice(0, 20), strict=True))
    rows = [{"subject_id": s.subjid, "site_id": sites[str(s.siteid)],
             "status": status_of.get(completion.get(s.subjid), Subject.Status.ENROLLED),
             "consent_date": consent_on.get(s.subjid), "enrolment_date": enrolled_on.get(s.subjid),
             "first_participation_date": first, "last_participation_date": last, "first_dose_date": dose,
             "arm": arm_of.get(s.subjid, "")}
            for s, first, last, dose in zip(dm.itertuples(index=False), _dates(dm["firstparticipantdate"]),
                                            _dates(dm["lastparticipantdate"]), _dates(dm["firstdosedate"]),
                                            strict=True)]
    failures = enroll[enroll["enrollyn"] != "Y"]
    elsewhere = ~failures["siteid"].astype(str).isin(sites)
    if elsewhere.any():
        run.warn(f"{int(elsewhere.sum())} screen failures at sites absent from the CTMS site list skipped",
                 where="rawplus_enroll")
        run.counts["screen_failures_skipped"] = int(elsewhere.sum())
        failures = failures[~elsewhere]
    rows += [{"subject_id": s.subjectid, "site_id": sites[str(s.siteid)], "status": Subject.Status.SCREEN_FAILED,
              "consent_date": None, "enrolment_date": None, "first_participation_date": None,
              "last_participation_date": None, "first_dose_date": None, "arm": ""}
             for s in failures.itertuples(index=False)]
    run.counts["screen_failures"] = len(failures)
    stored = rows_sync(run, Subject, rows, key=("subject_id",), scope={"study": run.study}, label="subjects")
    return {subject_id: pk for (subject_id,), pk in stored.items()}


def planned_day(name: str) -> int | None:
    """clindata has no schedule table; the planned study day is read from the visit name
    ("Day 1" -> 1, "Week 4" -> 29: day 1 plus whole weeks). Other visits have none."""
    if match := re.fullmatch(r"Day (\d+)", name):
        return int(match[1])
    if match := re.fullmatch(r"Week (\d+)", name):
        return 7 * int(match[1]) + 1
    return None


def _definitions(run: ImportRun, names_in_order: list[str]) -> dict[str, int]:
    rows = [{"oid": name[:128], "name": name, "order": order, "planned_day": planned_day(name),
             "repeating": name in ("Unscheduled", LOG_VISIT)} for order, name in enumerate(names_in_order, 1)]
    stored = rows_sync(run, VisitDefinition, rows, key=("oid",), scope={"study": run.study}, label="visit_definitions")
    return {oid: pk for (oid,), pk in stored.items()}


def _visits(run: ImportRun, frame: pd.DataFrame, subjects: dict[str, int]) -> pd.DataFrame:
    """One subject visit per visit-date record; repeats ("Unscheduled (5)") keep their number."""
    order = frame.groupby("foldername")["folderseq_nsv"].median().sort_values(kind="stable")
    definitions = _definitions(run, [*order.index, LOG_VISIT])
    visits = pd.DataFrame({
        "subject_id": frame["subjid"].map(subjects),
        "definition_id": frame["foldername"].map(definitions),
        "repeat_key": frame["instancename"].astype("string").str.extract(r"\((\d+)\)$")[0].fillna("1"),
        "actual_date": _dates(frame["visit_dt"]),
    }).sort_values(["subject_id", "definition_id", "repeat_key", "actual_date"], kind="stable")
    duplicate = visits.groupby(["subject_id", "definition_id", "repeat_key"]).cumcount()
    suffixed = visits["repeat_key"] + "." + duplicate.astype(str)
    visits["repeat_key"] = visits["repeat_key"].where(duplicate == 0, suffixed)
    log = pd.DataFrame({"subject_id": list(subjects.values()), "definition_id": definitions[LOG_VISIT],
                        "repeat_key": "1", "actual_date": None})
    run.counts["visits"] = len(visits)
    stored = rows_sync(run, SubjectVisit, pd.concat([visits, log]).to_dict("records"),
                   key=("subject_id", "definition_id", "repeat_key"), scope={"study": run.study},
                   label="subject_visits")
    out = pd.DataFrame([(*key, pk) for key, pk in stored.items()],
                       columns=["subject_id", "definition_id", "repeat_key", "visit_id"])
    out["log"] = out["definition_id"] == definitions[LOG_VISIT]
    dates = visits.set_index(["subject_id", "definition_id", "repeat_key"])["actual_date"]
    out["actual_date"] = out.set_index(["subject_id", "definition_id", "repeat_key"]).index.map(dates)
    out["definition"] = out["definition_id"].map({pk: oid for oid, pk in definitions.items()})
    return out


def _forms_and_items(run: ImportRun, lab_tests: list[tuple[str, str]]) -> tuple[dict, dict]:
    forms = [{"oid": "LB", "name": "Laboratory results", "order": 1, "repeating": True}]
    forms += [{"oid": oid, "name": name, "order": order, "repeating": True}
              for order, (oid, (name, _)) in enumerate(LOG_FORMS.items(), 2)]
    form_ids = {oid: pk for (oid,), pk in
                rows_sync(run, FormDefinition, forms, key=("oid",), scope={"study": run.study}, label="forms").items()}
    items = [{"oid": f"LB.{_oid(test)}", "label": f"{test} ({battery})"[:255], "form_id": form_ids["LB"],
              "data_type": "float", "order": n} for n, (battery, test) in enumerate(lab_tests, 1)]
    for form_oid, (_, columns) in LOG_FORMS.items():
        items += [{"oid": f"{form_oid}.{oid}", "label": label, "form_id": form_ids[form_oid], "data_type": data_type,
                   "order": n, "critical": form_oid in ("IC", "IE", "EX") or oid == "AESER"}
                  for n, (oid, label, data_type) in enumerate(columns.values(), 1)]
    item_ids = {oid: pk for (oid,), pk in
                rows_sync(run, ItemDefinition, items, key=("oid",), scope={"study": run.study}, label="items").items()}
    return form_ids, item_ids


def _oid(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text.replace("%", " PCT")).strip("_").upper()[:100]


def _data_points(run: ImportRun, tables: dict, subjects: dict[str, int], visits: pd.DataFrame) -> None:
    lb = tables["rawplus_lb"]
    lab_tests = sorted(set(zip(lb["battrnam"], lb["lbtstnam"], strict=False)), key=lambda pair: pair[1])
    form_ids, item_ids = _forms_and_items(run, lab_tests)
    writer = DataPointWriter(run)
    log_visit = visits[visits["log"]].set_index("subject_id")["visit_id"]
    for form_oid, (_, columns) in LOG_FORMS.items():
        source = {"AE": "rawplus_ae", "EX": "rawplus_ex", "IE": "rawplus_ie", "IC": "rawplus_consent",
                  "ENROLL": "rawplus_enroll", "STUDCOMP": "rawplus_studcomp", "SDRGCOMP": "rawplus_sdrgcomp"}[form_oid]
        writer.add_frame(_log_frame(tables[source], form_oid, columns, subjects, log_visit, form_ids, item_ids))
    writer.add_frame(_lab_frame(run, lb, subjects, visits, form_ids["LB"], item_ids))
    writer.finish()


def _log_frame(frame: pd.DataFrame, form_oid: str, columns: dict, subjects: dict, log_visit: pd.Series,
               form_ids: dict, item_ids: dict) -> pd.DataFrame:
    """A log form's records as long rows: one data point per (record, item), repeat key = the
    EDC record id where there is one, else the record's order within the subject."""
    frame = frame.copy()
    subject_key = frame["subjid"].where(frame["subjid"].fillna("") != "", frame.get("subjectid"))
    frame["subject_id"] = subject_key.map(subjects)
    if "recordid" in frame:
        frame["repeat_key"] = _text(frame["recordid"])
    else:
        frame["repeat_key"] = (frame.groupby("subject_id").cumcount() + 1).astype(str)
    parts = []
    for column, (oid, _, data_type) in columns.items():
        values = _dates(frame[column]).astype("string") if data_type == "date" else _text(frame[column])
        parts.append(pd.DataFrame({"subject_id": frame["subject_id"], "repeat_key": frame["repeat_key"],
                                   "item_id": item_ids[f"{form_oid}.{oid}"], "raw_value": values.fillna("")}))
    long = pd.concat(parts, ignore_index=True)
    long = long[long["subject_id"].notna()]
    long["subject_id"] = long["subject_id"].astype("int64")
    long["visit_id"] = long["subject_id"].map(log_visit).astype("int64")
    long["form_id"] = form_ids[form_oid]
    return long


def _lab_frame(run: ImportRun, lb: pd.DataFrame, subjects: dict, visits: pd.DataFrame, form_id: int,
               item_ids: dict) -> pd.DataFrame:
    """Lab results. A result belongs to the subject's scheduled visit of the same date; one with no
    visit that day gets a lab-only visit (definition from its visit name, repeat key the date)."""
    day = pd.to_datetime(lb["lb_dt"], errors="coerce").dt.normalize().astype("datetime64[ns]")
    lab = pd.DataFrame({
        "subject_id": _by_value(lb["subjid"], lambda s: s.map(subjects)).astype("int64"),
        "visnam": lb["visnam"],
        "day": day,
        "item_id": _by_value(lb["lbtstnam"], lambda s: ("LB." + s.map(_oid, na_action="ignore")).map(item_ids))
        .astype("int64"),
        "raw_value": _by_value(lb["siresn"], lambda s: s.map(lambda v: "" if pd.isna(v) else format(v, "g"))),
        "normal_low": _by_value(lb["sinrlo"], partial(pd.to_numeric, errors="coerce")).astype("float64"),
        "normal_high": _by_value(lb["sinrhi"], partial(pd.to_numeric, errors="coerce")).astype("float64"),
        "toxicity_grade": _by_value(lb["toxgrg_nsv"], lambda s: pd.to_numeric(s, errors="coerce").astype("Int64")),
        "abnormal_flag": _by_value(lb["alertsimplified"], lambda s: _text(s).str.slice(0, 8)),
    }, index=lb.index)
    lab["collected_at"] = day.dt.tz_localize("UTC")
    scheduled = visits[~visits["log"] & visits["actual_date"].notna()].drop_duplicates(["subject_id", "actual_date"])
    lab = lab.merge(pd.DataFrame({"subject_id": scheduled["subject_id"].astype("int64"),
                                  "day": pd.to_datetime(scheduled["actual_date"]).astype("datetime64[ns]"),
                                  "visit_id": scheduled["visit_id"]}), on=["subject_id", "day"], how="left")
    orphans = lab[lab["visit_id"].isna()]
    if not orphans.empty:
        orphans = orphans.assign(visnam=orphans["visnam"].astype(str), date=orphans["day"].dt.date)
        lab.loc[orphans.index, "visit_id"] = _lab_only_visits(run, orphans)
    lab["visit_id"] = lab["visit_id"].astype("int64")
    lab["form_id"] = form_id
    lab = lab.sort_values(["subject_id", "visit_id", "item_id", "day"], kind="stable")
    lab["repeat_key"] = (lab.groupby(["subject_id", "visit_id", "item_id"]).cumcount() + 1).astype(str)
    run.counts["lab_results"] = len(lab)
    return lab.drop(columns=["visnam", "day"])


def _by_value(series: pd.Series, convert) -> pd.Series:
    """`convert` applied to each distinct value once, not to every row: the lab columns repeat a
    few dozen values over a million rows. Missing values are converted too (the last entry)."""
    values = series.astype("category").cat
    converted = convert(pd.Series([*values.categories, None], dtype=object))
    return converted.take(values.codes.to_numpy()).set_axis(series.index)


def _lab_only_visits(run: ImportRun, orphans: pd.DataFrame) -> pd.Series:
    names = sorted(orphans["visnam"].unique())
    stored_defs = dict(VisitDefinition.objects.filter(study=run.study).values_list("oid", "pk"))
    last = VisitDefinition.objects.filter(study=run.study).aggregate(models.Max("order"))["order__max"] or 0
    extra = [name for name in names if name[:128] not in stored_defs]
    definitions = {**stored_defs, **_definitions_append(run, extra, start=last + 1)}
    keys = orphans[["subject_id", "visnam", "date"]].drop_duplicates()
    rows = [{"subject_id": int(k.subject_id), "definition_id": definitions[k.visnam[:128]],
             "repeat_key": f"LB {k.date}", "actual_date": k.date} for k in keys.itertuples(index=False)]
    stored = rows_sync(run, SubjectVisit, rows, key=("subject_id", "definition_id", "repeat_key"),
                   scope={"study": run.study}, label="lab_visits")
    run.counts["lab_only_visits"] = len(rows)
    index = pd.MultiIndex.from_arrays([orphans["subject_id"], orphans["visnam"].map(lambda n: definitions[n[:128]]),
                                       "LB " + orphans["date"].astype(str)])
    return pd.Series(index.map(stored), index=orphans.index)


def _definitions_append(run: ImportRun, names: list[str], *, start: int) -> dict[str, int]:
    rows = [{"oid": name[:128], "name": name, "order": start + n, "planned_day": planned_day(name)}
            for n, name in enumerate(names)]
    rows_sync(run, VisitDefinition, rows, key=("oid",), scope={"study": run.study}, label="visit_definitions")
    return dict(VisitDefinition.objects.filter(study=run.study, oid__in=[r["oid"] for r in rows])
                .values_list("oid", "pk"))


def _recipient(marking_group: str) -> str:
    group = marking_group.lower()
    for word, recipient in (("to site", Query.Recipient.SITE), ("system", Query.Recipient.SITE),
                            ("to cra", Query.Recipient.CRA), ("coding", Query.Recipient.CODING),
                            ("safety", Query.Recipient.SAFETY), ("to dm", Query.Recipient.DATA_MANAGEMENT)):
        if word in group:
            return recipient
    return Query.Recipient.SITE


def _midnight(series: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(series.astype("string"), utc=True, errors="coerce")
    return stamps.astype(object).where(stamps.notna(), None)


def _queries(run: ImportRun, frame: pd.DataFrame, dm: pd.DataFrame, subjects: dict[str, int]) -> None:
    """Historical EDC queries. clindata keeps no query text, so the text is a neutral pointer to
    the field; the marking group is kept in it. The external id is the EDC data point id and the
    creation date (unique in clindata)."""
    subject_of = dm.set_index("subject_nsv")["subjid"].map(subjects)
    site_of = dict(Subject.objects.filter(study=run.study).values_list("pk", "site_id"))
    frame = frame.assign(subject_pk=frame["subjectname"].map(subject_of))
    unknown = frame["subject_pk"].isna()
    if unknown.any():
        run.warn(f"{int(unknown.sum())} queries of unknown subjects skipped", where="edc_queries")
    frame = frame[~unknown]
    created, answered, closed = (_midnight(frame[c]) for c in ("created", "answered", "resolved"))
    rows = [{"external_id": f"{q.datapointid}/{q.created}", "subject_id": int(q.subject_pk),
             "site_id": site_of[int(q.subject_pk)], "origin": Query.Origin.IMPORTED,
             "state": QUERY_STATES.get(q.querystatus, Query.State.OPEN), "recipient": _recipient(q.markinggroup or ""),
             # The EDC's group of the rule or reviewer that raised it: the "rule" of its statistics
             "rule_code": f"EDC: {q.markinggroup}"[:160] if q.markinggroup else "",
             "text_origin": Query.TextOrigin.IMPORTED,
             "text": f"Historical query imported from the EDC (form {q.formoid}, field {q.fieldoid}, "
                     f"visit {q.visit}; marking group: {q.markinggroup})",
             "created_at": c, "answered_at": a, "closed_at": r}
            for q, c, a, r in zip(frame.itertuples(index=False), created, answered, closed, strict=False)]
    rows_sync(run, Query, rows, key=("external_id",), scope={"study": run.study}, label="queries")
    run.counts["queries"] = len(rows)


def _deviations(run: ImportRun, frame: pd.DataFrame, subjects: dict[str, int]) -> None:
    """CTMS protocol deviations. Those of a subject number absent from the study's subjects (173
    in clindata) cannot be placed at a site: reported as warnings, not invented."""
    site_of = dict(Subject.objects.filter(study=run.study).values_list("pk", "site_id"))
    frame = frame.assign(date=_dates(frame["deviationdate"]), category=_text(frame["companycategory"]))
    frame["n"] = frame.groupby(["subjectenrollmentnumber", "deviationdate"], dropna=False).cumcount() + 1
    frame["subject_pk"] = frame["subjectenrollmentnumber"].map(subjects)
    unknown = frame[frame["subject_pk"].isna()]
    if not unknown.empty:
        run.warn(f"{len(unknown)} deviations of {unknown['subjectenrollmentnumber'].nunique()} subject numbers "
                 "not in the study skipped", where="ctms_protdev")
        run.counts["deviations_skipped"] = len(unknown)
    rows = [{"external_id": f"{d.subjectenrollmentnumber}/{d.date or 'undated'}/{d.n}", "subject_id": int(d.subject_pk),
             "site_id": site_of[int(d.subject_pk)], "source": Deviation.Source.IMPORTED, "term": d.category[:255],
             "category": DEVIATION_CATEGORIES.get(d.category, Deviation.Category.OTHER),
             "importance": Deviation.Importance.IMPORTANT if d.deemedimportant == "Yes"
             else Deviation.Importance.NON_IMPORTANT,
             "description": f"Protocol deviation imported from the CTMS ({d.category or 'no category'})",
             "occurred_on": d.date, **code_source_category(d.category)}
            for d in frame[frame["subject_pk"].notna()].itertuples(index=False)]
    rows_sync(run, Deviation, rows, key=("external_id",), scope={"study": run.study}, label="deviations")
    run.counts["deviations"] = len(rows)


def clindata_demo_subset(*, source: Path, out: Path, sites: int = 10, subjects_per_site: int = 8) -> dict[str, int]:
    """Write a small, reproducible cut of clindata to `out` (parquet, same tables and columns):
    the `sites` sites with most subjects (ties by number), their first `subjects_per_site`
    subjects by id, and their screen failures. Returns rows per table."""
    tables = read_tables(Path(source), all_columns=True)
    dm = tables["rawplus_dm"]
    counts = dm.groupby("siteid").size().reset_index(name="n")
    counts["num"] = counts["siteid"].astype(int)
    chosen = counts.sort_values(["n", "num"], ascending=[False, True]).head(sites)["siteid"]
    keep = set(dm[dm["siteid"].isin(chosen)].sort_values("subjid").groupby("siteid").head(subjects_per_site)["subjid"])
    subset = restrict_to_subjects(tables, keep)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in subset.items():
        frame.reset_index(drop=True).to_parquet(out / f"{name}.parquet", engine="pyarrow", index=False,
                                                compression="zstd")
    return {name: len(frame) for name, frame in subset.items()}
