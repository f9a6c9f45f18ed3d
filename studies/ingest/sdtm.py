"""SDTM import: SAS transport (.xpt, via pyreadstat) or CSV (.csv / .csv.gz) domain files.

DM gives sites and subjects, SV the visits that happened, TV the planned schedule, TI the I/E
criteria; AE, CM, EX, DS, LB, VS, IE (and MH) become data points on a form named by the domain:
findings domains (LB, VS, IE) one item per --TESTCD, the others one item per variable, the record
kept apart by --SEQ. A record whose VISITNUM the subject has no SV visit for goes on the subject's
log visit. Files are found anywhere under the directory (the pilot keeps LB/VS apart)."""

from functools import partial
from pathlib import Path

import pandas as pd
import pyreadstat

from studies.audit import set_audit
from studies.ingest.base import ImportFailed, ImportRun, import_create, import_execute
from studies.ingest.clindata import rows_sync
from studies.ingest.writer import DataPointWriter
from studies.models import FormDefinition, Import, ItemDefinition, Site, Study, Subject, SubjectVisit, VisitDefinition

# TV has no window columns (the pilot's neither): every planned visit after Day 1 gets this window
# either side, the protocol-agnostic default most visit schedules use for weekly to monthly visits.
# It is recorded in the Import's counts so the window deviations derived from it can be traced.
DEFAULT_WINDOW_DAYS = 3
DATA_DOMAINS = ("AE", "CM", "EX", "DS", "MH", "LB", "VS", "IE")
FINDINGS = ("LB", "VS", "IE")
IDENTIFIERS = {"STUDYID", "DOMAIN", "USUBJID", "VISITNUM", "VISIT", "VISITDY"}
LOG_VISIT = "LOG"
COUNTRIES = {"USA": ("US", "America/New_York"), "US": ("US", "America/New_York"), "CAN": ("CA", "America/Toronto"),
             "GBR": ("GB", "Europe/London"), "DEU": ("DE", "Europe/Berlin"), "FRA": ("FR", "Europe/Paris"),
             "JPN": ("JP", "Asia/Tokyo"), "CHN": ("CN", "Asia/Shanghai")}
YES_NO = [{"code": "Y", "decode": "Yes"}, {"code": "N", "decode": "No"}]
NRIND = {"HIGH": "H", "LOW": "L", "NORMAL": "N", "ABNORMAL": "A"}


def find_domain(directory: Path, domain: str) -> Path | None:
    for suffix in (".xpt", ".csv", ".csv.gz"):
        for path in sorted(directory.rglob(f"*{suffix}")):
            if path.name.lower() == f"{domain.lower()}{suffix}":
                return path
    return None


def read_domain(directory: Path, domain: str) -> pd.DataFrame | None:
    """A domain as strings ("" for missing), whatever the file format."""
    path = find_domain(directory, domain)
    if path is None:
        return None
    if path.suffix == ".xpt":
        frame, _ = pyreadstat.read_xport(str(path))
        for column in frame.columns:
            if pd.api.types.is_numeric_dtype(frame[column]):
                frame[column] = _number_text(frame[column]).fillna("")
        return frame.astype(str).replace({"nan": ""})
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    # Numbers written by another tool ("1.0", "3.50") read as the transport file's ("1", "3.5"):
    # VISITNUM and --SEQ are keys that must match SV's and the other domains'.
    for column in frame.columns:
        if column == "VISITNUM" or column.endswith(("SEQ", "DY")):
            numbers = _number_text(pd.to_numeric(frame[column], errors="coerce"))
            frame[column] = frame[column].where(numbers.isna(), numbers)
    return frame


def _number_text(numbers: pd.Series) -> pd.Series:
    """Numbers as the transport file writes them (1, 3.5), missing kept missing."""
    return numbers.map(lambda v: None if pd.isna(v) else format(v, "g"))


def _date(value: str):
    parsed = pd.to_datetime(str(value)[:10], errors="coerce", format="ISO8601") if value else pd.NaT
    return None if pd.isna(parsed) else parsed.date()


def sdtm_import(*, directory: Path, study: Study | str, actor) -> Import:
    """Import the SDTM domains under `directory` into `study` (a Study, or its protocol id or ODM
    OID; a study that does not exist is created with that protocol id)."""
    directory = Path(directory)
    if not isinstance(study, Study):
        study = Study.objects.filter(protocol_id=study).first() or Study.objects.filter(oid=study).first() or study
    record = import_create(source=Import.Source.SDTM, actor=actor, filename=directory.name,
                           study=study if isinstance(study, Study) else None)
    return import_execute(record=record, actor=actor, load=partial(_load, directory=directory, protocol_id=study))


def _load(run: ImportRun, *, directory: Path, protocol_id) -> None:
    dm = read_domain(directory, "DM")
    if dm is None:
        raise ImportFailed("No DM domain (dm.xpt, dm.csv or dm.csv.gz) found", where=str(directory))
    _check_dm(dm)
    if run.study is None:
        study = Study(protocol_id=str(protocol_id), name=dm["STUDYID"].iloc[0] or str(protocol_id))
        set_audit(study, actor=run.actor, reason=run.reason)
        study.save()
        run.attach_study(study)
        run.counts["study_created"] = 1
    sites = _sites(run, dm)
    subjects = _subjects(run, dm, read_domain(directory, "DS"), sites)
    definitions = _schedule(run, read_domain(directory, "TV"), read_domain(directory, "SV"))
    visits = _visits(run, read_domain(directory, "SV"), subjects, definitions)
    ti = read_domain(directory, "TI")
    ta = read_domain(directory, "TA")
    run.counts["arms"] = 0 if ta is None else int(ta["ARMCD"].nunique())
    writer = DataPointWriter(run)
    for domain in DATA_DOMAINS:
        frame = read_domain(directory, domain)
        if frame is None and not (domain == "IE" and ti is not None):
            continue
        form_id, items = _form(run, domain, frame, ti if domain == "IE" else None)
        if frame is not None and not frame.empty:
            long = _long(domain, frame, subjects, visits, form_id, items)
            run.counts[f"{domain.lower()}_records"] = len(frame)
            writer.add_frame(long)
    writer.finish()


DM_REQUIRED = ("STUDYID", "USUBJID", "SITEID")
DM_DATES = ("RFICDTC", "RFSTDTC")
ISO_DATE = r"^\d{4}(-\d{2}(-\d{2}(T[\d:.+\-Z]*)?)?)?$"  # ISO 8601, partial dates allowed


def _check_dm(dm: pd.DataFrame) -> None:
    """Refuse a DM the detectors could not trust: required variables, one row per subject, the
    reference dates ISO 8601 (a partial date is kept as unknown, see _full_date), ARMCD <= 20."""
    missing = [name for name in DM_REQUIRED if name not in dm.columns]
    if missing:
        raise ImportFailed(f"DM lacks the required variable(s) {', '.join(missing)}", where="DM")
    blank = dm[dm["USUBJID"].str.strip() == ""]
    if not blank.empty:
        raise ImportFailed("DM has a record without USUBJID", where=f"DM record {blank.index[0] + 1}")
    duplicated = dm[dm["USUBJID"].duplicated()]
    if not duplicated.empty:
        raise ImportFailed(f"DM has USUBJID {duplicated['USUBJID'].iloc[0]} twice", where="DM")
    for name in DM_DATES:
        if name in dm.columns:
            values = dm[name].str.strip()
            bad = dm[(values != "") & ~values.str.match(ISO_DATE) | values.map(_impossible_date)]
            if not bad.empty:
                raise ImportFailed(f"DM.{name} {bad[name].iloc[0]!r} is not an ISO 8601 date",
                                   where=f"DM USUBJID {bad['USUBJID'].iloc[0]}")
    if "ARMCD" in dm.columns and (dm["ARMCD"].str.len() > 20).any():
        bad = dm[dm["ARMCD"].str.len() > 20]
        raise ImportFailed(f"DM.ARMCD {bad['ARMCD'].iloc[0]!r} is longer than 20 characters (SDTM)",
                           where=f"DM USUBJID {bad['USUBJID'].iloc[0]}")


def _impossible_date(value: str) -> bool:
    """A complete date that does not exist (2014-02-30)."""
    if len(value) < 10:
        return False
    return pd.isna(pd.to_datetime(value[:10], errors="coerce", format="%Y-%m-%d"))


def _full_date(value: str):
    """A complete ISO 8601 date (or date-time) as a date; a partial one (2014, 2014-03) is not a
    day and stays unknown rather than becoming the first of the month."""
    return _date(value) if len(str(value)) >= 10 else None


def _sites(run: ImportRun, dm: pd.DataFrame) -> dict[str, int]:
    rows = []
    for number, group in dm.groupby("SITEID"):
        country = group["COUNTRY"].iloc[0] if "COUNTRY" in group else ""
        code, zone = COUNTRIES.get(country, (country[:2] or "XX", "UTC"))
        rows.append({"number": number, "name": f"Site {number}", "country": code, "timezone": zone})
    stored = rows_sync(run, Site, rows, key=("number",), scope={"study": run.study}, label="sites")
    return {number: pk for (number,), pk in stored.items()}


def _subjects(run: ImportRun, dm: pd.DataFrame, ds: pd.DataFrame | None, sites: dict) -> dict[str, int]:
    """Status from the DS disposition event: completed, screen failure, else discontinued; a
    subject without one is enrolled (with a reference start date) or still in screening."""
    disposition = {}
    if ds is not None:
        events = ds[ds["DSCAT"] == "DISPOSITION EVENT"]
        disposition = events.drop_duplicates("USUBJID", keep="last").set_index("USUBJID")["DSDECOD"].to_dict()
    rows = []
    for subject in dm.itertuples(index=False):
        decod = disposition.get(subject.USUBJID)
        if decod == "COMPLETED":
            status = Subject.Status.COMPLETED
        elif decod == "SCREEN FAILURE":
            status = Subject.Status.SCREEN_FAILED
        elif decod:
            status = Subject.Status.DISCONTINUED
        else:
            status = Subject.Status.ENROLLED if getattr(subject, "RFSTDTC", "") else Subject.Status.SCREENING
        rfic, rfst = getattr(subject, "RFICDTC", ""), getattr(subject, "RFSTDTC", "")
        rows.append({"subject_id": subject.USUBJID, "site_id": sites[subject.SITEID], "status": status,
                     "consent_date": _full_date(rfic), "enrolment_date": _full_date(rfst),
                     "first_dose_date": _full_date(rfst), "arm": getattr(subject, "ARMCD", "") or ""})
    stored = rows_sync(run, Subject, rows, key=("subject_id",), scope={"study": run.study}, label="subjects")
    return {subject_id: pk for (subject_id,), pk in stored.items()}


def _visit_oid(visitnum: str) -> str:
    return f"VISIT.{visitnum}"


def _schedule(run: ImportRun, tv: pd.DataFrame | None, sv: pd.DataFrame | None) -> dict[str, int]:
    """TV -> planned visits (planned day VISITDY, window DEFAULT_WINDOW_DAYS either side after Day
    1); visit numbers SV has and TV lacks (unscheduled visits) become unplanned definitions."""
    rows, planned = [], set()
    if tv is not None:
        for visit in tv.drop_duplicates("VISITNUM").itertuples(index=False):
            day = int(float(visit.VISITDY)) if visit.VISITDY else None
            window = DEFAULT_WINDOW_DAYS if day is not None and day > 1 else 0
            rows.append({"oid": _visit_oid(visit.VISITNUM), "name": visit.VISIT, "planned_day": day,
                         "order": int(float(visit.VISITNUM) * 100), "window_before": window, "window_after": window})
            planned.add(visit.VISITNUM)
    if sv is not None:
        for visit in sv[~sv["VISITNUM"].isin(planned)].drop_duplicates("VISITNUM").itertuples(index=False):
            rows.append({"oid": _visit_oid(visit.VISITNUM), "name": visit.VISIT, "planned_day": None,
                         "order": int(float(visit.VISITNUM) * 100), "repeating": True})
    rows.append({"oid": LOG_VISIT, "name": "Subject log (AE, CM, MH, DS)", "planned_day": None, "order": 100_000,
                 "repeating": True})
    run.counts["planned_visits"] = len(planned)
    run.counts["visit_window_default_days"] = DEFAULT_WINDOW_DAYS
    stored = rows_sync(run, VisitDefinition, rows, key=("oid",), scope={"study": run.study}, label="visit_definitions")
    return {oid: pk for (oid,), pk in stored.items()}


def _visits(run: ImportRun, sv: pd.DataFrame | None, subjects: dict, definitions: dict) -> dict[tuple, int]:
    rows = [{"subject_id": pk, "definition_id": definitions[LOG_VISIT], "repeat_key": "1", "actual_date": None}
            for pk in subjects.values()]
    if sv is not None:
        sv = sv[sv["USUBJID"].isin(subjects)].copy()
        repeat = sv.groupby(["USUBJID", "VISITNUM"]).cumcount() + 1
        for visit, n in zip(sv.itertuples(index=False), repeat, strict=False):
            rows.append({"subject_id": subjects[visit.USUBJID],
                         "definition_id": definitions[_visit_oid(visit.VISITNUM)],
                         "repeat_key": str(n), "actual_date": _date(visit.SVSTDTC)})
        run.counts["visits"] = len(sv)
    stored = rows_sync(run, SubjectVisit, rows, key=("subject_id", "definition_id", "repeat_key"),
                       scope={"study": run.study}, label="subject_visits")
    oid_of = {pk: oid for oid, pk in definitions.items()}
    # (subject pk, VISITNUM) -> the first visit of that number; (subject pk, LOG) -> the log visit
    return {(subject, oid_of[definition].removeprefix("VISIT.")): pk
            for (subject, definition, repeat), pk in sorted(stored.items()) if repeat == "1"}


def _form(run: ImportRun, domain: str, frame: pd.DataFrame | None, ti: pd.DataFrame | None) -> tuple[int, dict]:
    stored = rows_sync(run, FormDefinition, [{"oid": domain, "name": f"SDTM {domain}", "repeating": True,
                                              "order": DATA_DOMAINS.index(domain)}],
                       key=("oid",), scope={"study": run.study}, label="forms")
    form_id = stored[(domain,)]
    rows = []
    if domain in FINDINGS:
        tests = {}
        if ti is not None:
            tests.update({t.IETESTCD: t.IETEST for t in ti.itertuples(index=False)})
        if frame is not None:
            tests.update(frame.drop_duplicates(f"{domain}TESTCD").set_index(f"{domain}TESTCD")[f"{domain}TEST"].to_dict())
        for code, label in tests.items():
            numeric = False
            if frame is not None and f"{domain}STRESN" in frame:
                values = frame.loc[frame[f"{domain}TESTCD"] == code, f"{domain}ORRES"]
                numeric = bool(len(values)) and pd.to_numeric(values[values != ""], errors="coerce").notna().all()
            rows.append({"oid": f"{domain}.{code}", "label": str(label)[:255], "form_id": form_id,
                         "data_type": "float" if numeric else "text", "critical": domain == "IE",
                         "codelist": YES_NO if domain == "IE" else []})
    else:
        rows = [{"oid": f"{domain}.{column}", "label": column, "form_id": form_id, "data_type": "text",
                 "critical": domain in ("EX", "DS") or column == f"{domain}SER"}
                for column in frame.columns if column not in IDENTIFIERS and column != f"{domain}SEQ"]
    items = rows_sync(run, ItemDefinition, rows, key=("oid",), scope={"study": run.study}, label="items")
    return form_id, {oid: pk for (oid,), pk in items.items() if oid.startswith(f"{domain}.")}


def _long(domain: str, frame: pd.DataFrame, subjects: dict, visits: dict, form_id: int, items: dict) -> pd.DataFrame:
    frame = frame[frame["USUBJID"].isin(subjects)]
    subject = frame["USUBJID"].map(subjects)
    visitnum = frame["VISITNUM"] if "VISITNUM" in frame else pd.Series("", index=frame.index)
    visit = [visits.get((s, v)) or visits[(s, LOG_VISIT)] for s, v in zip(subject, visitnum, strict=False)]
    base = pd.DataFrame({"subject_id": subject.to_numpy(), "visit_id": visit, "form_id": form_id,
                         "repeat_key": frame[f"{domain}SEQ"].to_numpy()})
    if domain in FINDINGS:
        blank = pd.Series("", index=frame.index)
        long = base.assign(item_id=frame[f"{domain}TESTCD"].map(lambda c: items[f"{domain}.{c}"]).to_numpy(),
                           raw_value=frame[f"{domain}ORRES"].to_numpy(),
                           units=frame.get(f"{domain}ORRESU", blank).str.slice(0, 64).to_numpy())
        if f"{domain}ORNRLO" in frame:
            long["normal_low"] = pd.to_numeric(frame[f"{domain}ORNRLO"], errors="coerce").to_numpy()
            long["normal_high"] = pd.to_numeric(frame[f"{domain}ORNRHI"], errors="coerce").to_numpy()
        if f"{domain}NRIND" in frame:
            long["abnormal_flag"] = frame[f"{domain}NRIND"].map(lambda v: NRIND.get(v, v[:8])).to_numpy()
        if f"{domain}DTC" in frame:
            long["collected_at"] = pd.to_datetime(frame[f"{domain}DTC"].str.slice(0, 10), errors="coerce",
                                                  format="ISO8601", utc=True).to_numpy()
        return long
    parts = [base.assign(item_id=pk, raw_value=frame[oid.split(".", 1)[1]].to_numpy()) for oid, pk in items.items()]
    return pd.concat(parts, ignore_index=True)
