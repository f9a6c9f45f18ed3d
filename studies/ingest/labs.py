"""Lab results in: HL7 v2 result messages (python-hl7) and FHIR R4 Observation / DiagnosticReport /
Bundle (fhir.resources), told apart by content.

Both formats are first read into `LabResult`s (code, value, units, reference range, abnormal flag,
collection time, the patient's ids), so one HL7 message and its FHIR conversion give the same
results; then `LabWriter` turns them into data points of form "LB" through the DataPointWriter.

Decisions (documented here because they decide what a file loads):
- Result messages are ORU (R01, R30-R32) and OUL (R21-R24). OML and ORM are orders: their OBX
  segments are order context (e.g. a heart rate given with the order), not lab results, so such a
  message loads nothing and the import says "not a result message" in its warnings.
- An OBX is loaded when it has a test code and one value of a lab value type: NM and SN (numeric),
  ST/TX/FT (text), CWE/CE/CNE/CF (coded: the display text is stored), DT/DTM/TS/TM. RP and ED
  (pointers and binaries) are reported and skipped. A repeated value ("27~25") is several results
  of one test, as the FHIR converter reads it (one component each); they are kept apart by repeat
  key. An OBX without a value (result pending, OBX-11 "I") is counted, not loaded.
- Patients are matched to Subject.subject_id of the study by PID-3 (every repetition), PID-2 and
  PID-4; FHIR by the referenced Patient's identifiers, then its id. Unknown patients are counted
  and reported, never created.
- A value goes to visit "Unscheduled lab" on its collection date (OBX-14, else OBR-7; FHIR
  effective[x]). The same test again on the same day in a later message replaces the value (a
  final result supersedes a preliminary one, with the history reason of the import); repeated
  within one message it is kept apart (repeat key 2, 3...).
- Times without a zone are taken as UTC.
"""

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import hl7
from fhir.resources.R4B import get_fhir_model_class

from studies.audit import set_audit
from studies.ingest.base import ImportFailed, ImportRun, check_size, import_create, import_execute
from studies.ingest.writer import DataPointWriter, IncomingValue
from studies.models import FormDefinition, Import, ItemDefinition, Study, Subject, SubjectVisit, VisitDefinition

LOINC = "http://loinc.org"
LAB_FORM_OID = "LB"
LAB_VISIT_OID = "SE.UNSCHEDULED_LAB"

Warn = Callable[[str, str], None]


@dataclass(frozen=True)
class LabResult:
    patient_ids: tuple[str, ...]
    code: str
    code_system: str  # LOINC, or the sender's own code system name
    label: str
    value: str
    numeric: bool
    units: str = ""
    normal_low: float | None = None
    normal_high: float | None = None
    abnormal_flag: str = ""
    collected_at: datetime | None = None
    where: str = ""


# --- shared parsing --------------------------------------------------------------------------------

_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:-|–|to|_|\.\.)\s*(-?\d+(?:\.\d+)?)\s*$", re.IGNORECASE)
_BOUND = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*(-?\d+(?:\.\d+)?)\s*$")


def reference_range(text: str) -> tuple[float | None, float | None]:
    """(low, high) of a reference range as labs write it: "3.5-5.0", "4.3 to 6.2", "<5", ">10"."""
    text = (text or "").strip()
    if match := _RANGE.match(text):
        return float(match[1]), float(match[2])
    if match := _BOUND.match(text):
        bound = float(match[2])
        return (None, bound) if match[1] in ("<", "<=", "≤") else (bound, None)
    return None, None


def system_name(system: str) -> str:
    """LOINC as its URI; any other code system as a short name (the FHIR converter's local-system
    URIs and HL7 table names give the same name)."""
    if system in ("LN", "LOINC", LOINC):
        return LOINC
    system = system.removeprefix("http://example.com/v2-to-fhir-converter/CodeSystem/")
    return re.sub(r"[^A-Za-z0-9]+", "_", system).strip("_")


def item_oid(code: str, system: str) -> str:
    safe_code = re.sub(r"[^A-Za-z0-9.\-]+", "_", code)
    return (f"LB.{safe_code}" if system == LOINC else f"LB.{system}.{safe_code}")[:128]


def _number_text(value) -> str:
    if isinstance(value, Decimal):
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- HL7 v2 ----------------------------------------------------------------------------------------

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")
RESULT_MESSAGES = {"ORU", "OUL"}
_NUMERIC = {"NM", "SN"}
_TEXT = {"ST", "TX", "FT"}
_CODED = {"CWE", "CE", "CNE", "CF"}
_DATES = {"DT", "DTM", "TS", "TM"}


def hl7_time(text: str) -> datetime | None:
    match = _TS.match((text or "").strip())
    if not match:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    tz = UTC
    if zone:
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        tz = timezone(offset if zone[0] == "+" else -offset)
    try:
        return datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                        int(second or 0), tzinfo=tz)
    except ValueError:
        return None


def hl7_messages(text: str) -> list[str]:
    """The messages of a file: BOM dropped, any line ending made \\r, batch envelopes skipped."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\r").replace("\n", "\r")
    segments = [s for s in text.split("\r") if s.strip() and s[:3] not in ("FHS", "FTS", "BHS", "BTS")]
    messages: list[list[str]] = []
    for segment in segments:
        if segment.startswith("MSH"):
            messages.append([])
        elif not messages:
            raise ImportFailed("Not an HL7 v2 message: no MSH segment before the first segment "
                               f"({segment[:3]!r}).", where="segment 1")
        messages[-1].append(segment)
    if not messages:
        raise ImportFailed("Not an HL7 v2 message: no MSH segment.", where="start of file")
    return ["\r".join(m) for m in messages]


class _Fields:
    """Field access by HL7 number on a python-hl7 segment, split by the message's separators."""

    def __init__(self, message: hl7.Message):
        self.message = message
        self.rep_sep, self.comp_sep = message.separators[2], message.separators[3]

    def raw(self, segment, number: int) -> str:
        return str(segment[number]) if len(segment) > number else ""

    def reps(self, segment, number: int) -> list[str]:
        raw = self.raw(segment, number)
        return raw.split(self.rep_sep) if raw else []

    def comps(self, text: str) -> list[str]:
        return [self.message.unescape(c) if "\\" in c else c for c in text.split(self.comp_sep)]

    def comp(self, segment, number: int, index: int = 0) -> str:
        reps = self.reps(segment, number)
        if not reps:
            return ""
        parts = self.comps(reps[0])
        return parts[index].strip() if len(parts) > index else ""


def hl7_results(text: str, warn: Warn, counts: Counter) -> Iterator[LabResult]:
    for number, body in enumerate(hl7_messages(text), start=1):
        try:
            message = hl7.parse(body)
        except Exception as exc:  # python-hl7 raises several types on a broken message
            raise ImportFailed(f"Unreadable HL7 message: {exc}", where=f"message {number}")
        f = _Fields(message)
        msh = message.segment("MSH")
        kind = f.comp(msh, 9, 0), f.comp(msh, 9, 1)
        counts["messages"] += 1
        if kind[0] not in RESULT_MESSAGES:
            counts["not_result_messages"] += 1
            warn(f"{'^'.join(kind)} is not a result message; its OBX segments are order context, not loaded.",
                 f"message {number}")
            continue
        yield from _hl7_message_results(message, f, number, warn, counts)


def _hl7_message_results(message, f: _Fields, number: int, warn: Warn, counts: Counter) -> Iterator[LabResult]:
    patient_ids: tuple[str, ...] = ()
    obr_time = None
    for index, segment in enumerate(message, start=1):
        name = str(segment[0])
        where = f"message {number}, segment {index} ({name})"
        if name == "PID":
            ids = [f.comps(r)[0].strip() for n in (3, 2, 4) for r in f.reps(segment, n)]
            patient_ids = tuple(dict.fromkeys(i for i in ids if i))
        elif name == "OBR":
            obr_time = hl7_time(f.comp(segment, 7))
        elif name == "OBX":
            yield from _obx(segment, f, patient_ids, obr_time, where, warn, counts)


def _obx(segment, f: _Fields, patient_ids, obr_time, where: str, warn: Warn, counts: Counter) -> Iterator[LabResult]:
    value_type = f.raw(segment, 2).strip()
    code, label, system = (f.comp(segment, 3, i) for i in (0, 1, 2))
    values = [v for v in f.reps(segment, 5) if v.strip(" ^")]
    if not code:
        counts["results_skipped"] += 1
        warn("OBX without a test code (OBX-3), skipped.", where)
        return
    if not values:
        counts["results_without_value"] += 1
        return
    if value_type not in _NUMERIC | _TEXT | _CODED | _DATES:
        counts["results_skipped"] += 1
        warn(f"OBX {code}: value type {value_type or '(none)'} is not a lab value, skipped.", where)
        return
    low, high = reference_range(f.raw(segment, 7))
    for raw in values:  # a repeated value is several results of one test (as the FHIR converter reads it)
        value = _obx_value(value_type, raw, f)
        yield LabResult(
            patient_ids=patient_ids, code=code, code_system=system_name(system), label=label or code, value=value,
            numeric=value_type in _NUMERIC and _is_number(value),
            units=f.comp(segment, 6) if value_type in _NUMERIC else "", normal_low=low, normal_high=high,
            abnormal_flag=f.comp(segment, 8), collected_at=hl7_time(f.comp(segment, 14)) or obr_time, where=where,
        )


def _obx_value(value_type: str, raw: str, f: _Fields) -> str:
    parts = f.comps(raw) + [""] * 9
    if value_type == "SN":  # comparator ^ number ^ separator ^ number
        return "".join(parts[:4]).strip() if (parts[0] or parts[2]) else parts[1].strip()
    if value_type in _CODED:  # display text, else the code, else the original text
        return next((p.strip() for p in (parts[1], parts[0], parts[8]) if p.strip()), "")
    if value_type in _TEXT:
        return f.message.unescape(raw.strip()) if "\\" in raw else raw.strip()
    return parts[0].strip()


# --- FHIR R4 ---------------------------------------------------------------------------------------

def _fhir_model(resource: dict, warn: Warn, where: str):
    """Validate one resource with fhir.resources (R4B, the R4-compatible release). A narrative
    that fails validation is not data: retry without it before giving up."""
    model = get_fhir_model_class(resource["resourceType"])
    for attempt in (resource, {k: v for k, v in resource.items() if k != "text"}):
        try:
            return model.model_validate(attempt)
        except Exception as exc:  # pydantic ValidationError, or a fhir_core error
            error = exc
    warn(f"Invalid {resource['resourceType']} skipped: {str(error).splitlines()[0]}", where)
    return None


def _fhir_time(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        return _fhir_time(datetime.fromisoformat(str(value)))
    except ValueError:
        return None


def _code(concept) -> tuple[str, str, str]:
    codings = list(concept.coding or []) if concept else []
    coding = next((c for c in codings if c.system == LOINC), codings[0] if codings else None)
    if coding is None or not coding.code:
        return "", "", ""
    return coding.code, system_name(coding.system or ""), coding.display or (concept.text or "") or coding.code


def _value(holder) -> tuple[str, bool, str] | None:
    """(value, numeric, units) of an Observation or a component, None when it has none."""
    if holder.valueQuantity is not None and holder.valueQuantity.value is not None:
        quantity = holder.valueQuantity
        return _number_text(quantity.value), True, quantity.code or quantity.unit or ""
    if holder.valueCodeableConcept is not None:
        concept = holder.valueCodeableConcept
        coding = (concept.coding or [None])[0]
        text = (coding.display or coding.code) if coding else concept.text
        return (text or "", False, "") if text else None
    for name in ("valueString", "valueInteger", "valueBoolean", "valueDateTime", "valueTime"):
        value = getattr(holder, name, None)
        if value is not None:
            return (str(value).lower() if isinstance(value, bool) else str(value)), name == "valueInteger", ""
    return None


def _range(holder) -> tuple[float | None, float | None]:
    ranges = getattr(holder, "referenceRange", None) or []
    if not ranges:
        return None, None
    first = ranges[0]
    low = float(first.low.value) if first.low is not None and first.low.value is not None else None
    high = float(first.high.value) if first.high is not None and first.high.value is not None else None
    return (low, high) if (low is not None or high is not None) else reference_range(first.text or "")


def _flag(holder) -> str:
    for concept in getattr(holder, "interpretation", None) or []:
        for coding in concept.coding or []:
            if coding.code:
                return coding.code
    return ""


def _observation_results(obs, patient_ids, warn: Warn, counts: Counter, where: str) -> Iterator[LabResult]:
    collected = _fhir_time(obs.effectiveDateTime or obs.effectiveInstant
                           or (obs.effectivePeriod.start if obs.effectivePeriod else None))
    parts = [(obs, obs.code)] + [(c, c.code) for c in (obs.component or [])]
    loaded = False
    for holder, concept in parts:
        value = _value(holder)
        if value is None:
            continue
        code, system, label = _code(concept)
        if not code:
            counts["results_skipped"] += 1
            warn("Observation value without a code, skipped.", where)
            continue
        low, high = _range(holder)
        loaded = True
        yield LabResult(patient_ids=patient_ids, code=code, code_system=system, label=label, value=value[0],
                        numeric=value[1], units=value[2], normal_low=low, normal_high=high,
                        abnormal_flag=_flag(holder), collected_at=collected, where=where)
    if not loaded:
        counts["results_without_value"] += 1


def _patient_ids(reference, patients: dict[str, list[str]]) -> tuple[str, ...]:
    if reference is None:
        return ()
    ids = []
    ref = reference.reference or ""
    if ref in patients:
        ids += patients[ref]
    if ref.startswith("Patient/"):
        ids.append(ref.removeprefix("Patient/"))
    if reference.identifier is not None and reference.identifier.value:
        ids.append(reference.identifier.value)
    return tuple(dict.fromkeys(i for i in ids if i))


def fhir_results(text: str, warn: Warn, counts: Counter) -> Iterator[LabResult]:
    try:
        document = json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        raise ImportFailed(f"Malformed JSON: {exc.msg}", where=f"line {exc.lineno}, column {exc.colno}")
    if not isinstance(document, dict) or "resourceType" not in document:
        raise ImportFailed("Not a FHIR resource: no resourceType.", where="top level")
    if document["resourceType"] == "Bundle":
        entries = [(e.get("fullUrl", ""), e.get("resource") or {}) for e in document.get("entry") or []]
    else:
        entries = [("", document)]
    patients: dict[str, list[str]] = {}
    for full_url, resource in entries:
        if resource.get("resourceType") == "Patient":
            patient = _fhir_model(resource, warn, f"Patient/{resource.get('id', '')}")
            if patient is not None:
                ids = [i.value for i in patient.identifier or [] if i.value] + ([patient.id] if patient.id else [])
                for key in (full_url, f"Patient/{patient.id}"):
                    if key:
                        patients[key] = ids
    found = False
    for _, resource in entries:
        kind = resource.get("resourceType")
        where = f"{kind}/{resource.get('id', '')}"
        if kind == "Observation":
            obs = _fhir_model(resource, warn, where)
            if obs is not None:
                found = True
                yield from _observation_results(obs, _patient_ids(obs.subject, patients), warn, counts, where)
        elif kind == "DiagnosticReport":
            report = _fhir_model(resource, warn, where)
            if report is None:
                continue
            yield from _report_results(report, entries, patients, warn, counts, where)
            found = found or bool(report.contained)
    if not found:
        warn(f"No Observation in this {document['resourceType']}: nothing to load.", "top level")


def _report_results(report, entries, patients, warn: Warn, counts: Counter, where: str) -> Iterator[LabResult]:
    """Observations contained in a report; the report's bundled results are read as entries."""
    contained = {f"#{r.id}": r for r in report.contained or [] if r.get_resource_type() == "Observation"}
    in_file = {f"{r.get('resourceType')}/{r.get('id')}" for _, r in entries} | {u for u, _ in entries if u}
    subject = _patient_ids(report.subject, patients)
    for result in report.result or []:
        ref = result.reference or ""
        if ref in contained:
            obs = contained[ref]
            ids = _patient_ids(obs.subject, patients) or subject
            yield from _observation_results(obs, ids, warn, counts, f"{where} {ref}")
        elif ref not in in_file:
            counts["results_not_in_file"] += 1
            warn(f"Result {ref} is not in this file.", where)


def lab_results(path: Path, warn: Warn, counts: Counter) -> Iterator[LabResult]:
    """The results of one file, HL7 v2 or FHIR JSON told apart by content."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFailed("The file is not UTF-8 text.", where=f"byte {exc.start}")
    if text.lstrip().startswith("{"):
        return fhir_results(text, warn, counts)
    return hl7_results(text, warn, counts)


def lab_source(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()
    return Import.Source.FHIR if head.startswith(b"{") else Import.Source.HL7


# --- writing ---------------------------------------------------------------------------------------

class LabWriter:
    """LabResults -> data points of form LB at the unscheduled lab visit of the collection day.
    Definitions are created on first use with audited saves (a handful per import)."""

    def __init__(self, run: ImportRun):
        self.run = run
        self.study = run.study
        self.writer = DataPointWriter(run)
        self.subjects = dict(Subject.objects.filter(study=self.study).values_list("subject_id", "pk"))
        self.items = {i.oid: i for i in ItemDefinition.objects.filter(study=self.study, oid__startswith="LB.")}
        self.visits: dict[tuple[int, str], int] = {}
        self.unknown: set[tuple[str, ...]] = set()
        self._form = self._visit_definition = None

    def _audited(self, instance):
        set_audit(instance, actor=self.run.actor, reason=self.run.reason)
        instance.save()
        return instance

    @property
    def form(self) -> FormDefinition:
        if self._form is None:
            self._form = (FormDefinition.objects.filter(study=self.study, oid=LAB_FORM_OID).first()
                          or self._audited(FormDefinition(study=self.study, oid=LAB_FORM_OID,
                                                          name="Laboratory results", repeating=True)))
        return self._form

    def visit_id(self, subject_pk: int, collected: datetime | None) -> int:
        key = collected.date().isoformat() if collected else "undated"
        if (subject_pk, key) not in self.visits:
            if self._visit_definition is None:
                self._visit_definition = (
                    VisitDefinition.objects.filter(study=self.study, oid=LAB_VISIT_OID).first()
                    or self._audited(VisitDefinition(study=self.study, oid=LAB_VISIT_OID, name="Unscheduled lab",
                                                     order=9999, repeating=True)))
            visit = (SubjectVisit.objects.filter(subject_id=subject_pk, definition=self._visit_definition,
                                                 repeat_key=key).first()
                     or self._audited(SubjectVisit(study=self.study, subject_id=subject_pk,
                                                   definition=self._visit_definition, repeat_key=key,
                                                   actual_date=collected.date() if collected else None)))
            self.visits[(subject_pk, key)] = visit.pk
        return self.visits[(subject_pk, key)]

    def item(self, result: LabResult) -> ItemDefinition:
        oid = item_oid(result.code, result.code_system)
        if oid not in self.items:
            self.items[oid] = self._audited(ItemDefinition(
                study=self.study, form=self.form, oid=oid, label=result.label[:255],
                data_type=ItemDefinition.DataType.FLOAT if result.numeric else ItemDefinition.DataType.TEXT,
                units=result.units[:64], code=result.code[:64], code_system=result.code_system[:128]))
        return self.items[oid]

    def write_file(self, results: Iterator[LabResult], *, name: str = "") -> None:
        repeats: Counter = Counter()  # the same test twice in one file is kept apart
        for result in results:
            subject_pk = next((self.subjects[i] for i in result.patient_ids if i in self.subjects), None)
            if subject_pk is None:
                self.run.counts["values_for_unknown_subjects"] += 1
                if result.patient_ids not in self.unknown:
                    self.unknown.add(result.patient_ids)
                    self.run.counts["unknown_subjects"] += 1
                    ids = ", ".join(result.patient_ids) or "(none)"
                    self.run.warn(f"Unknown subject (patient ids {ids}): its results are not loaded.",
                                  where=f"{name}: {result.where}" if name else result.where)
                continue
            item = self.item(result)
            visit = self.visit_id(subject_pk, result.collected_at)
            repeats[(subject_pk, visit, item.pk)] += 1
            self.writer.add(IncomingValue(
                subject_id=subject_pk, visit_id=visit, form_id=self.form.pk, item=item, raw_value=result.value,
                repeat_key=str(repeats[(subject_pk, visit, item.pk)]), units=result.units[:64],
                normal_low=result.normal_low, normal_high=result.normal_high,
                abnormal_flag=result.abnormal_flag[:8], collected_at=result.collected_at))
            self.run.counts["lab_values"] += 1
        self.writer.flush()


def labs_import(*, paths: list[Path], study: Study, actor, record: Import | None = None) -> Import:
    """Import HL7 v2 / FHIR lab files into `study`, atomically (all files or none)."""
    paths = [Path(p) for p in paths]
    if record is None:
        record = import_create(source=lab_source(paths[0]), actor=actor, study=study,
                               path=paths[0] if len(paths) == 1 else None,
                               filename=", ".join(p.name for p in paths)[:255])

    def load(run: ImportRun) -> None:
        if run.study is None:
            raise ImportFailed("Lab results need a study (--study).")
        writer = LabWriter(run)
        for path in paths:
            check_size(path)

            def warn(message: str, where: str, name: str = path.name) -> None:
                run.warn(message, where=f"{name}: {where}")

            try:
                writer.write_file(lab_results(path, warn, run.counts), name=path.name)
            except ImportFailed as exc:
                raise ImportFailed(exc.message, where=f"{path.name}: {exc.where}" if exc.where else path.name)
            run.counts["files"] += 1
        writer.writer.finish()

    return import_execute(record=record, actor=actor, load=load)
