"""CDISC ODM 1.3.x import: metadata -> the study's definitions, ClinicalData -> subjects, visits and
data points, source audit trails and vendor query threads.

The file is streamed (lxml iterparse): Study and AdminData are small and read whole; ClinicalData is
read one SubjectData at a time and released, and subjects are written in batches (set-based), so
memory stays flat however large the file. Vendor extensions (OpenClinica, Rave `mdsol:`, REDCap,
our own `trialops:` export) are read where they carry meaning and otherwise ignored."""

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path

from django.utils.dateparse import parse_datetime

from queries.models import Query, QueryMessage
from studies.audit import audited_bulk_create, audited_copy_create, set_audit
from studies.ingest.base import ImportFailed, ImportRun, check_size, definitions_sync, import_create, import_execute
from studies.ingest.copy import is_postgresql
from studies.ingest.writer import DataPointWriter, IncomingValue
from studies.ingest.xml import localname, namespace, release, safe_iterparse
from studies.models import (
    DataPoint,
    FormDefinition,
    Import,
    ItemDefinition,
    Site,
    SourceAuditRecord,
    Study,
    Subject,
    SubjectVisit,
    VisitDefinition,
)

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
TRIALOPS_NS = "https://trialops.example/ns/odm-query/v1"
OPENCLINICA_PREFIX = "http://www.openclinica.org/ns/odm_ext"
MDSOL_PREFIX = "http://www.mdsol.com/ns/odm"
DATASET_XML_NS = "http://www.cdisc.org/ns/Dataset-XML/v1.0"

# Subjects are written in batches: small enough to bound memory, large enough for set-based writes.
SUBJECT_BATCH = 200
ITEM_BATCH = 5000
DEFAULT_SITE = "UNASSIGNED"
PLACEHOLDER_COUNTRY = "XX"  # ISO 3166 user-assigned code: "not known", never a real country

_OC_STATE = {"new": Query.State.OPEN, "updated": Query.State.OPEN, "resolution proposed": Query.State.ANSWERED,
             "closed": Query.State.CLOSED, "not applicable": Query.State.CLOSED}
_STATE = {"candidate": Query.State.CANDIDATE, "open": Query.State.OPEN, "answered": Query.State.ANSWERED,
          "closed": Query.State.CLOSED, "resolved": Query.State.CLOSED, "cancelled": Query.State.CANCELLED,
          "canceled": Query.State.CANCELLED}


def odm_import(*, path: Path, actor, study: Study | None = None, full_snapshot: bool = False,
               record: Import | None = None) -> Import:
    """Import one ODM file atomically; the returned Import says what happened (never raises for bad input)."""
    path = Path(path)
    if record is None:
        record = import_create(source=Import.Source.ODM, actor=actor, study=study, path=path,
                               full_snapshot=full_snapshot)
    return import_execute(record=record, actor=actor, load=lambda run: OdmLoader(run, path).load())


# Items carrying the SDTM DM reference variables the deviation detectors read (CDASH/SDTM-named
# ItemDefs such as IT.DM.RFSTDTC): the subject's consent date, first dose (day 1) and arm.
REFERENCE_ITEMS = {"RFICDTC": "consent_date", "RFSTDTC": "first_dose_date", "ARMCD": "arm"}


def reference_fields(items) -> dict:
    """The subject fields an ODM subject's items give (last OID segment RFICDTC, RFSTDTC, ARMCD);
    a value that is not a complete date is left out."""
    out = {}
    for value in items:
        field_name = REFERENCE_ITEMS.get(value.item_oid.replace("_", ".").rsplit(".", 1)[-1].upper())
        if field_name is None or field_name in out or not value.value.strip():
            continue
        if field_name == "arm":
            out[field_name] = value.value.strip()[:20]
            continue
        try:
            out[field_name] = date.fromisoformat(value.value.strip()[:10])
        except ValueError:
            continue
    return out


def when(text: str | None) -> datetime | None:
    """An ODM date or datetime as an aware datetime; naive source times are taken as UTC."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        parsed = parse_datetime(text.replace(" ", "T", 1)) if len(text) > 10 else None
        if parsed is None:
            parsed = datetime.combine(date.fromisoformat(text[:10]), time())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(slots=True)
class SourceAudit:
    entity: str
    event: str
    user: str
    occurred_at: datetime | None
    old: str = ""
    new: str = ""
    reason: str = ""
    location: str = ""


@dataclass(slots=True)
class SourceQuery:
    external_id: str
    state: str
    text: str
    created_at: datetime | None
    answered_at: datetime | None = None
    closed_at: datetime | None = None
    messages: list[tuple[str, str, datetime | None, str]] = field(default_factory=list)


@dataclass(slots=True)
class ItemValue:
    visit: tuple[str, str]
    form_oid: str
    item_oid: str
    repeat_key: str
    value: str
    audits: list[SourceAudit] = field(default_factory=list)
    queries: list[SourceQuery] = field(default_factory=list)


@dataclass(slots=True)
class SubjectRecord:
    key: str
    site: tuple[str, str]  # (kind, oid): ("location", LocationOID) / ("study", site study OID) / ("default", "")
    visits: dict[tuple[str, str], date | None] = field(default_factory=dict)
    items: list[ItemValue] = field(default_factory=list)
    audits: list[SourceAudit] = field(default_factory=list)
    queries: list[SourceQuery] = field(default_factory=list)


class OdmLoader:
    def __init__(self, run: ImportRun, path: Path):
        self.run = run
        self.path = path
        self.file = StudyFile()
        self.ns = ODM_NS
        self.writer = DataPointWriter(run)
        self.batch: list[SubjectRecord] = []
        self.batch_items = 0
        self.clinical_oid = ""
        self.defs_loaded = False

    # -- driver ---------------------------------------------------------------------------------
    def load(self) -> None:
        check_size(self.path)
        depth = 0
        for event, element in safe_iterparse(self.path):
            if event == "start":
                depth += 1
                if depth == 1:
                    self._check_root(element)
                elif depth == 2 and self._is(element, "ClinicalData"):
                    self._start_clinical(element)
                elif depth == 3 and self._is(element.getparent(), "ClinicalData") and self._is(element,
                                                                                               "ItemGroupData"):
                    raise ImportFailed("ItemGroupData directly under ClinicalData is Dataset-XML (SDTM "
                                       "tabulation), not EDC clinical data.", where=f"line {element.sourceline}")
                continue
            depth -= 1
            if depth == 2 and self._is(element, "SubjectData"):
                self._add_subject(self._read_subject(element))
                release(element)
            elif depth == 1:
                if self._is(element, "Study"):
                    self._study_end(element)
                elif self._is(element, "AdminData"):
                    self.file.admin_read(element, self.ns)
                elif self._is(element, "ClinicalData"):
                    self._flush()
                release(element)
        self._flush()
        if self.run.study is None:
            raise ImportFailed("The file holds neither a Study nor ClinicalData.", where="ODM")
        self.writer.finish()

    def _is(self, element, name: str) -> bool:
        return element is not None and element.tag == (f"{{{self.ns}}}{name}" if self.ns else name)

    def _check_root(self, root) -> None:
        if localname(root) != "ODM":
            raise ImportFailed(f"Not a CDISC ODM file: the root element is <{localname(root)}>.", where="line 1")
        self.ns = namespace(root)
        if self.ns not in (ODM_NS, ""):
            raise ImportFailed(f"Unsupported ODM namespace {self.ns!r}: this importer reads ODM 1.3.x "
                               f"({ODM_NS}).", where=f"line {root.sourceline}")
        version = (root.get("ODMVersion") or "").strip()
        if not (version == "1.3" or version.startswith("1.3.")):
            raise ImportFailed(f"ODMVersion {version or '(missing)'!r} is not supported: expected 1.3.x.",
                               where=f"line {root.sourceline}, ODM/@ODMVersion")
        if root.get(f"{{{DATASET_XML_NS}}}DatasetXMLVersion"):
            raise ImportFailed("This is a CDISC Dataset-XML file (SDTM tabulation data), not ODM EDC clinical "
                               "data; load SDTM with import_sdtm.", where=f"line {root.sourceline}")

    # -- study and metadata ---------------------------------------------------------------------
    def _study_end(self, element) -> None:
        info = study_read(element, self.ns)
        main = self.file.main
        if main is not None and info.includes & ({main.oid} | self.file.site_studies.keys()):
            self.file.site_studies[info.oid] = info  # OpenClinica models a site as a child study
            return
        if main is not None:
            raise ImportFailed(f"The file holds more than one study ({main.oid}, {info.oid}); import them "
                               "separately.", where=f"line {element.sourceline}")
        self.file.main = info
        study = self._resolve_study(info.oid, name=info.name, protocol=info.protocol)
        metadata_apply(run=self.run, study=study, info=info)

    def _resolve_study(self, oid: str, *, name: str = "", protocol: str = "") -> Study:
        if self.run.study is not None:
            return self.run.study
        study = Study.objects.filter(oid=oid).first()
        if study is None:
            protocol_id = (protocol or name or oid).strip()[:64]
            if Study.objects.filter(protocol_id=protocol_id).exists():
                protocol_id = oid[:64]
            if Study.objects.filter(protocol_id=protocol_id).exists():
                raise ImportFailed(f"A study with protocol id {protocol_id!r} exists with another OID; pass "
                                   "--study to say which study this file belongs to.", where=f"Study {oid}")
            study = Study(protocol_id=protocol_id, oid=oid, name=(name or oid).strip()[:255])
            set_audit(study, actor=self.run.actor, reason=self.run.reason)
            study.save()
            self.run.counts["studies_created"] += 1
        return self.run.attach_study(study)

    def _start_clinical(self, element) -> None:
        self._flush()
        oid = element.get("StudyOID", "")
        where = f"line {element.sourceline}, ClinicalData StudyOID={oid!r}"
        main = self.file.main
        if main is None and self.run.study is None:
            study = Study.objects.filter(oid=oid).first()
            if study is None:
                raise ImportFailed(f"Unknown study OID {oid!r}: the file has no metadata for it and no study "
                                   "has that OID (import its metadata first, or pass --study).", where=where)
            self.run.attach_study(study)
        known = {self.run.study.oid, main.oid if main else None, *self.file.site_studies}
        if oid not in known:
            if main is None:  # clinical data only, into the study the user named
                self.run.warn(f"ClinicalData StudyOID {oid!r} differs from the study's OID; loaded into "
                              f"{self.run.study.protocol_id} as asked.", where=where)
            else:
                raise ImportFailed(f"ClinicalData refers to unknown study OID {oid!r}.", where=where)
        self.clinical_oid = oid
        if not self.defs_loaded:
            self.file.definitions_load(self.run.study)
            self.defs_loaded = True

    # -- reading one subject --------------------------------------------------------------------
    def _read_subject(self, element) -> SubjectRecord:
        key = (element.get("SubjectKey") or "").strip()
        if not key:
            raise ImportFailed("SubjectData without a SubjectKey.", where=f"line {element.sourceline}")
        default = ("study", self.clinical_oid) if self.clinical_oid in self.file.site_studies else ("default", "")
        record = SubjectRecord(key=key, site=default)
        self._walk(element, record, {"entity": key})
        return record

    def _walk(self, element, record: SubjectRecord, ctx: dict) -> None:
        for child in element:
            name, ns = localname(child), namespace(child)
            if ns == self.ns:
                if name == "SiteRef":
                    record.site = ("location", (child.get("LocationOID") or "").strip())
                elif name == "StudyEventData":
                    self._event(child, record, ctx)
                elif name == "FormData":
                    self._form(child, record, ctx)
                elif name == "ItemGroupData":
                    ig_key = child.get("ItemGroupRepeatKey") or "1"
                    self._walk(child, record, {**ctx, "entity": child.get("ItemGroupOID", ""), "ig": ig_key})
                elif name.startswith("ItemData"):
                    self._item(child, record, ctx)
                elif name == "AuditRecord":
                    record.audits.append(self._audit_record(child, ctx["entity"]))
            elif name == "AuditLogs" and ns.startswith(OPENCLINICA_PREFIX):
                record.audits.extend(self._oc_audit_logs(child))
            elif name == "DiscrepancyNotes" and ns.startswith(OPENCLINICA_PREFIX):
                record.queries.extend(self._oc_notes(child))
            elif name == "Query" and ns == TRIALOPS_NS:
                record.queries.append(self._trialops_query(child))
            elif name == "AuditTrail" and ns == TRIALOPS_NS:
                record.audits.extend(self._audit_record(a, ctx["entity"]) for a in child if localname(a) ==
                                     "AuditRecord")

    def _event(self, element, record: SubjectRecord, ctx: dict) -> None:
        oid = element.get("StudyEventOID", "")
        self.file.require("visit", oid, element, record.key)
        visit = (oid, element.get("StudyEventRepeatKey") or "1")
        start = next((v for k, v in element.attrib.items() if k.rsplit("}", 1)[-1] == "StartDate"), None)
        started = when(start)
        record.visits[visit] = started.date() if started else record.visits.get(visit)
        self._walk(element, record, {**ctx, "visit": visit, "entity": oid})

    def _form(self, element, record: SubjectRecord, ctx: dict) -> None:
        oid = element.get("FormOID", "")
        if "visit" not in ctx:
            raise ImportFailed("FormData outside StudyEventData.", where=f"line {element.sourceline}")
        self.file.require("form", oid, element, record.key)
        self._walk(element, record, {**ctx, "form": oid, "form_key": element.get("FormRepeatKey") or "1",
                                     "entity": oid})

    def _item(self, element, record: SubjectRecord, ctx: dict) -> None:
        oid = element.get("ItemOID", "")
        if "form" not in ctx:
            raise ImportFailed("ItemData outside FormData.", where=f"line {element.sourceline}")
        self.file.require("item", oid, element, record.key)
        if element.get("IsNull") == "Yes":
            value = ""
        elif localname(element) == "ItemData":
            value = element.get("Value", "")
        else:  # ODM 1.3 typed forms (ItemDataString, ItemDataInteger, ...) carry the value as text
            value = element.text or ""
        ig_key, form_key = ctx.get("ig", "1"), ctx["form_key"]
        repeat = ig_key if form_key == "1" else f"{form_key}:{ig_key}"  # repeating forms kept apart too
        item = ItemValue(visit=ctx["visit"], form_oid=ctx["form"], item_oid=oid, repeat_key=repeat[:32], value=value)
        trail = [c for c in element if localname(c) == "AuditTrail" and namespace(c) == TRIALOPS_NS]
        for child in element:
            name, ns = localname(child), namespace(child)
            # Our own export repeats the latest trail entry as the schema's single AuditRecord: read the trail.
            if name == "AuditRecord" and ns == self.ns and not trail:
                item.audits.append(self._audit_record(child, oid, value=value))
            elif name == "AuditTrail" and ns == TRIALOPS_NS:
                item.audits.extend(self._audit_record(a, oid) for a in child if localname(a) == "AuditRecord")
            elif name == "AuditLogs" and ns.startswith(OPENCLINICA_PREFIX):
                item.audits.extend(self._oc_audit_logs(child))
            elif name == "DiscrepancyNotes" and ns.startswith(OPENCLINICA_PREFIX):
                item.queries.extend(self._oc_notes(child))
            elif name == "Query" and ns.startswith(MDSOL_PREFIX):
                # A query we raised in Rave ourselves (QueryRepeatKey TQ-<id>, queries.edc) comes
                # back in the next pull: it is already ours, its state arrives through queries.edc
                if not (child.get("QueryRepeatKey") or "").startswith("TQ-"):
                    item.queries.append(self._rave_query(child, record.key, ctx, oid))
            elif name == "Query" and ns == TRIALOPS_NS:
                item.queries.append(self._trialops_query(child))
        record.items.append(item)

    # -- audit records and queries as the vendors write them ------------------------------------
    def _text(self, element, name: str) -> str:
        found = element.find(f"{{{self.ns}}}{name}" if self.ns else name)
        return (found.text or "").strip() if found is not None else ""

    def _ref(self, element, name: str, attribute: str) -> str:
        found = element.find(f"{{{self.ns}}}{name}" if self.ns else name)
        return (found.get(attribute) or "").strip() if found is not None else ""

    def _audit_record(self, element, entity: str, *, value: str = "") -> SourceAudit:
        extra = {k.rsplit("}", 1)[-1]: v for k, v in element.attrib.items() if k.startswith(f"{{{TRIALOPS_NS}}}")}
        edit_point = element.get("EditPoint", "")
        return SourceAudit(
            entity=entity, event=extra.get("Event") or f"AuditRecord {edit_point}".strip(),
            user=self.file.user_label(self._ref(element, "UserRef", "UserOID")),
            occurred_at=when(self._text(element, "DateTimeStamp")),
            old=extra.get("OldValue", ""), new=extra.get("NewValue", value),
            reason=self._text(element, "ReasonForChange"), location=self._ref(element, "LocationRef", "LocationOID"),
        )

    def _oc_audit_logs(self, element) -> list[SourceAudit]:
        entity = element.get("EntityID", "")
        return [
            SourceAudit(entity=entity, event=log.get("AuditType") or log.get("Type") or "",
                        user=self.file.user_label(log.get("UserID", "")), occurred_at=when(log.get("DateTimeStamp")),
                        old=log.get("OldValue", ""), new=log.get("NewValue", ""), reason=log.get("ReasonForChange", ""))
            for log in element if localname(log) == "AuditLog"
        ]

    def _oc_notes(self, element) -> list[SourceQuery]:
        found = []
        for note in element:
            if localname(note) != "DiscrepancyNote":
                continue
            children = [c for c in note if localname(c) == "ChildNote"]
            messages = []
            for index, child in enumerate(children):
                text = "\n".join(t for t in (self._oc_text(child, "Description"), self._oc_text(child, "DetailedNote"))
                                 if t)
                status = (child.get("Status") or "").lower()
                kind = (QueryMessage.Kind.QUESTION if index == 0 else QueryMessage.Kind.ANSWER
                        if status == "resolution proposed" else QueryMessage.Kind.CLOSE if status == "closed"
                        else QueryMessage.Kind.NOTE)
                author = self.file.user_label(self._ref(child, "UserRef", "UserOID"))
                messages.append((kind, author, when(child.get("DateCreated")), text or note.get("NoteType", "")))
            state = _OC_STATE.get((note.get("Status") or "").lower(), Query.State.OPEN)
            updated = when(note.get("DateUpdated"))
            created = when(note.get("DateCreated")) or min((m[2] for m in messages if m[2]), default=updated)
            external_id = note.get("ID") or self._digest("oc", element.get("EntityID", ""), *(m[3] for m in messages))
            text = (messages[0][3] if messages else "") or note.get("NoteType", "") or "Discrepancy note"
            found.append(SourceQuery(
                external_id=external_id, state=state, text=text,
                created_at=created, answered_at=updated if state == Query.State.ANSWERED else None,
                closed_at=updated if state == Query.State.CLOSED else None, messages=messages,
            ))
        return found

    @staticmethod
    def _oc_text(element, name: str) -> str:
        found = next((c for c in element if localname(c) == name), None)
        return (found.text or "").strip() if found is not None else ""

    def _rave_query(self, element, subject_key: str, ctx: dict, item_oid: str) -> SourceQuery:
        state = _STATE.get((element.get("Status") or "open").lower(), Query.State.OPEN)
        external = self._digest("mdsol", subject_key, *ctx["visit"], ctx["form"], ctx.get("ig", "1"), item_oid,
                                element.get("QueryRepeatKey", ""))
        messages = [(QueryMessage.Kind.QUESTION, element.get("Recipient", ""), None, element.get("Value", ""))]
        if element.get("Response"):
            messages.append((QueryMessage.Kind.ANSWER, "", None, element.get("Response")))
        return SourceQuery(external_id=external, state=state, text=element.get("Value") or "Rave query",
                           created_at=None, messages=messages)

    def _trialops_query(self, element) -> SourceQuery:
        value = next((c.text or "" for c in element if localname(c) == "Value"), "")
        messages = [(c.get("Kind") or QueryMessage.Kind.NOTE, c.get("Author", ""), when(c.get("DateTimeStamp")),
                     c.text or "") for c in element if localname(c) == "Message"]
        return SourceQuery(
            external_id=element.get("ExternalID") or f"trialops:{element.get('OID', '')}",
            state=_STATE.get((element.get("State") or "open").lower(), Query.State.OPEN), text=value or "Query",
            created_at=when(element.get("CreatedDateTime")), answered_at=when(element.get("AnsweredDateTime")),
            closed_at=when(element.get("ClosedDateTime")), messages=messages,
        )

    @staticmethod
    def _digest(prefix: str, *parts: str) -> str:
        joined = "/".join(parts)
        text = f"{prefix}:{joined}"
        return text if len(text) <= 128 else f"{prefix}:{hashlib.sha256(joined.encode()).hexdigest()}"

    # -- writing a batch of subjects --------------------------------------------------------------
    def _add_subject(self, record: SubjectRecord) -> None:
        self.batch.append(record)
        self.batch_items += len(record.items)
        self.run.counts["subjects_read"] += 1
        self.run.counts["item_data_read"] += len(record.items)
        if len(self.batch) >= SUBJECT_BATCH or self.batch_items >= ITEM_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch, self.batch_items = self.batch, [], 0
        subjects = self._subjects(batch)
        visits = self._visits(batch, subjects)
        defs = self.file
        for record in batch:
            subject = subjects[record.key]
            for value in record.items:
                latest = (max((a for a in value.audits if a.occurred_at), key=lambda a: a.occurred_at, default=None)
                          if value.audits else None)
                self.writer.add(IncomingValue(
                    subject_id=subject.pk, visit_id=visits[(subject.pk, value.visit)].pk,
                    form_id=defs.forms[value.form_oid].pk, item=defs.items[value.item_oid],
                    raw_value=value.value, repeat_key=value.repeat_key,
                    entered_by=latest.user[:150] if latest else "", entered_at=latest.occurred_at if latest else None,
                ))
        self.writer.flush()
        if any(r.audits or r.queries or any(v.audits or v.queries for v in r.items) for r in batch):
            points = self._data_points(subjects.values())
            self._audits(batch, subjects, visits, points)
            self._queries(batch, subjects, visits, points)

    def _site(self, kind: str, oid: str) -> Site:
        if kind == "study":
            site_study = self.file.site_studies[oid]
            number, name = self.file.site_number(site_study), site_study.name or oid
        elif kind == "location" and oid:
            number, name = oid[:32], self.file.locations.get(oid, oid)
        else:
            number, name = DEFAULT_SITE, "Site not given in the ODM file"
        site = self.file.sites.get(number)
        if site is None:
            site = Site.objects.filter(study=self.run.study, number=number).first()
        if site is None:
            site = Site(study=self.run.study, number=number, name=name[:255], country=PLACEHOLDER_COUNTRY)
            set_audit(site, actor=self.run.actor, reason=self.run.reason)
            site.save()
            self.run.counts["sites_created"] += 1
            self.run.warn(f"Site {number} created with the placeholder country {PLACEHOLDER_COUNTRY}: ODM does not "
                          "carry the country; set it.", where=f"site {number}")
        self.file.sites[number] = site
        return site

    def _subjects(self, batch: list[SubjectRecord]) -> dict[str, Subject]:
        keys = {r.key for r in batch}
        known = {s.subject_id: s for s in Subject.objects.filter(study=self.run.study, subject_id__in=keys)}
        new = []
        for record in batch:
            site = self._site(*record.site)
            subject = known.get(record.key)
            reference = reference_fields(record.items)
            if subject is None:
                subject = Subject(study=self.run.study, site=site, subject_id=record.key[:64], **reference)
                known[record.key] = subject
                new.append(subject)
            else:
                changed = {k: v for k, v in reference.items() if getattr(subject, k) != v}
                if subject.site_id != site.pk and subject.pk:
                    changed["site"] = site
                if changed and subject.pk:
                    for name, value in changed.items():
                        setattr(subject, name, value)
                    why = ("site changed in the EDC" if "site" in changed
                           else "reference dates or arm changed in the EDC")
                    set_audit(subject, actor=self.run.actor, reason=f"{self.run.reason}: {why}")
                    subject.save()
                    self.run.counts["subjects_updated"] += 1
        audited_bulk_create(new, actor=self.run.actor, reason=self.run.reason)
        self.run.counts["subjects_created"] += len(new)
        return known

    def _visits(self, batch, subjects) -> dict[tuple, SubjectVisit]:
        pks = [s.pk for s in subjects.values()]
        known = {(v.subject_id, (v.definition.oid, v.repeat_key)): v for v in
                 SubjectVisit.objects.filter(subject_id__in=pks).select_related("definition")}
        new = []
        for record in batch:
            subject = subjects[record.key]
            for key, actual in record.visits.items():
                visit = known.get((subject.pk, key))
                if visit is None:
                    visit = SubjectVisit(study=self.run.study, subject=subject, definition=self.file.visits[key[0]],
                                         repeat_key=key[1][:32], actual_date=actual)
                    known[(subject.pk, key)] = visit
                    new.append(visit)
                elif actual and visit.actual_date != actual:
                    visit.actual_date = actual
                    set_audit(visit, actor=self.run.actor, reason=self.run.reason)
                    visit.save()
                    self.run.counts["visits_updated"] += 1
        if new and is_postgresql():  # visits can be as many as data points: COPY them, history rows included
            columns = ["study_id", "subject_id", "definition_id", "repeat_key", "actual_date"]
            ids = audited_copy_create(SubjectVisit, columns, [tuple(getattr(v, c) for c in columns) for v in new],
                                      actor=self.run.actor, reason=self.run.reason)
            for visit, pk in zip(new, ids, strict=True):
                visit.pk = pk
        else:
            audited_bulk_create(new, actor=self.run.actor, reason=self.run.reason)
        self.run.counts["visits_created"] += len(new)
        return known

    def _data_points(self, subjects) -> dict[tuple, int]:
        rows = DataPoint.objects.filter(subject_id__in=[s.pk for s in subjects]).values_list(
            "pk", "subject_id", "visit_id", "form_id", "item_id", "repeat_key")
        return {tuple(row[1:]): row[0] for row in rows}

    def _point(self, subject, visits, points, value: ItemValue) -> int | None:
        visit = visits[(subject.pk, value.visit)]
        form, item = self.file.forms[value.form_oid], self.file.items[value.item_oid]
        return points.get((subject.pk, visit.pk, form.pk, item.pk, value.repeat_key))

    def _audits(self, batch, subjects, visits, points) -> None:
        """Source audit records, as a multiset: the EDC may log the same event twice (both are kept),
        and a re-import adds only what is not yet stored."""
        fields = ("subject_id", "data_point_id", "item_oid", "event", "user_name", "occurred_at", "old_value",
                  "new_value", "reason", "location")
        stored = Counter(SourceAuditRecord.objects.filter(
            study=self.run.study, subject_id__in=[s.pk for s in subjects.values()]).values_list(*fields))
        new = []
        for record in batch:
            subject = subjects[record.key]
            pairs = [(None, a) for a in record.audits]
            pairs += [(self._point(subject, visits, points, v), a) for v in record.items for a in v.audits]
            for point, audit in pairs:
                row = SourceAuditRecord(
                    study=self.run.study, source_import=self.run.record, subject=subject, data_point_id=point,
                    item_oid=audit.entity[:128], event=audit.event[:128], user_name=audit.user[:255],
                    occurred_at=audit.occurred_at, old_value=audit.old, new_value=audit.new, reason=audit.reason,
                    location=audit.location[:255])
                key = tuple(getattr(row, name) for name in fields)
                if stored[key] > 0:
                    stored[key] -= 1
                else:
                    new.append(row)
        SourceAuditRecord.objects.bulk_create(new, batch_size=2000)
        self.run.counts["source_audit_records_created"] += len(new)

    def _queries(self, batch, subjects, visits, points) -> None:
        pairs = []
        for record in batch:
            subject = subjects[record.key]
            pairs += [(subject, None, q) for q in record.queries]
            pairs += [(subject, self._point(subject, visits, points, v), q) for v in record.items for q in v.queries]
        if not pairs:
            return
        stored = {q.external_id: q for q in Query.objects.filter(
            study=self.run.study, external_id__in=[q.external_id for _, _, q in pairs])}
        for subject, point, source in pairs:
            query = stored.get(source.external_id)
            if query is None:
                query = Query(study=self.run.study, site_id=subject.site_id, subject=subject, data_point_id=point,
                              origin=Query.Origin.IMPORTED, external_id=source.external_id[:128], text=source.text,
                              text_origin=Query.TextOrigin.IMPORTED)
                self.run.counts["queries_created"] += 1
            elif (query.state, query.answered_at, query.closed_at) == (source.state, source.answered_at,
                                                                         source.closed_at):
                self._messages(query, source)
                continue
            else:
                self.run.counts["queries_updated"] += 1
            query.state, query.answered_at, query.closed_at = source.state, source.answered_at, source.closed_at
            if source.created_at:
                query.created_at = source.created_at
            set_audit(query, actor=self.run.actor, reason=self.run.reason)
            query.save()
            stored[source.external_id] = query
            self._messages(query, source)

    def _messages(self, query: Query, source: SourceQuery) -> None:
        stored = Counter(query.messages.values_list("author_name", "created_at", "text")) if query.pk else Counter()
        for kind, author, created, text in source.messages:
            created = created or query.created_at
            key = (author[:150], created, text)
            if stored[key] > 0:
                stored[key] -= 1
                continue
            message = QueryMessage(query=query, kind=kind, author_name=author[:150], text=text,
                                   created_at=created)
            set_audit(message, actor=self.run.actor, reason=self.run.reason)
            message.save()
            self.run.counts["query_messages_created"] += 1


# -- metadata (Study / MetaDataVersion) and what the file says about users and locations -------------
_DATA_TYPES = {
    "text": ItemDefinition.DataType.TEXT, "string": ItemDefinition.DataType.TEXT,
    "integer": ItemDefinition.DataType.INTEGER, "float": ItemDefinition.DataType.FLOAT,
    "double": ItemDefinition.DataType.FLOAT, "date": ItemDefinition.DataType.DATE,
    "datetime": ItemDefinition.DataType.DATETIME, "time": ItemDefinition.DataType.TIME,
    "boolean": ItemDefinition.DataType.BOOLEAN, "partialdate": ItemDefinition.DataType.PARTIAL_DATE,
    "partialdatetime": ItemDefinition.DataType.PARTIAL_DATE, "incompletedate": ItemDefinition.DataType.PARTIAL_DATE,
    "incompletedatetime": ItemDefinition.DataType.PARTIAL_DATE,
}


@dataclass
class StudyInfo:
    oid: str
    name: str = ""
    protocol: str = ""
    includes: set[str] = field(default_factory=set)
    units: dict[str, str] = field(default_factory=dict)
    event_order: dict[str, int] = field(default_factory=dict)
    events: dict[str, dict] = field(default_factory=dict)
    forms: dict[str, dict] = field(default_factory=dict)
    groups: dict[str, list[tuple[str, int | None, bool]]] = field(default_factory=dict)
    items: dict[str, dict] = field(default_factory=dict)
    codelists: dict[str, list[dict]] = field(default_factory=dict)


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def _translated(element, q) -> str:
    if element is None:
        return ""
    texts = element.findall(q("TranslatedText"))
    chosen = next((t for t in texts if (t.get("{http://www.w3.org/XML/1998/namespace}lang") or "en")[:2] == "en"),
                  texts[0] if texts else None)
    return _clean(chosen.text) if chosen is not None else ""


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def study_read(element, ns: str) -> StudyInfo:
    """A Study element as plain data (it is small; the clinical data is what streams)."""
    def q(name):
        return f"{{{ns}}}{name}" if ns else name

    info = StudyInfo(oid=element.get("OID", ""))
    variables = element.find(q("GlobalVariables"))
    if variables is not None:
        info.name = _clean(variables.findtext(q("StudyName")))
        info.protocol = _clean(variables.findtext(q("ProtocolName")))
    for unit in element.iter(q("MeasurementUnit")):
        info.units[unit.get("OID", "")] = _translated(unit.find(q("Symbol")), q) or unit.get("Name", "")
    for mdv in element.iter(q("MetaDataVersion")):
        info.includes |= {inc.get("StudyOID", "") for inc in mdv.findall(q("Include"))} - {info.oid}
        for index, ref in enumerate(mdv.iter(q("StudyEventRef")), start=1):
            info.event_order[ref.get("StudyEventOID", "")] = _number(ref.get("OrderNumber")) or index
        for sed in mdv.findall(q("StudyEventDef")):
            info.events[sed.get("OID", "")] = {"name": sed.get("Name", ""), "repeating": sed.get("Repeating") == "Yes"}
        for fd in mdv.findall(q("FormDef")):
            info.forms[fd.get("OID", "")] = {
                "name": fd.get("Name", ""), "repeating": fd.get("Repeating") == "Yes",
                "groups": [ref.get("ItemGroupOID", "") for ref in fd.findall(q("ItemGroupRef"))]}
        for ig in mdv.findall(q("ItemGroupDef")):
            info.groups[ig.get("OID", "")] = [
                (ref.get("ItemOID", ""), _number(ref.get("OrderNumber")), ref.get("Mandatory") == "Yes")
                for ref in ig.findall(q("ItemRef"))]
        for item in mdv.findall(q("ItemDef")):
            info.items[item.get("OID", "")] = _item_def(item, q, info)
        for codelist in mdv.findall(q("CodeList")):
            entries = [{"code": c.get("CodedValue", ""), "decode": _translated(c.find(q("Decode")), q)}
                       for c in codelist.findall(q("CodeListItem"))]
            entries += [{"code": c.get("CodedValue", ""), "decode": ""} for c in codelist.findall(q("EnumeratedItem"))]
            info.codelists[codelist.get("OID", "")] = entries
    return info


def _item_def(item, q, info: StudyInfo) -> dict:
    unit_ref = item.find(q("MeasurementUnitRef"))
    codelist_ref = item.find(q("CodeListRef"))
    ranges: dict[str, dict[str, float]] = {"Hard": {}, "Soft": {}}
    for check in item.findall(q("RangeCheck")):
        comparator, values = check.get("Comparator", ""), check.findall(q("CheckValue"))
        bound = {"GE": "low", "GT": "low", "LE": "high", "LT": "high"}.get(comparator)
        try:
            value = float((values[0].text or "").strip()) if values and bound else None
        except ValueError:
            value = None
        if value is not None:
            ranges["Soft" if check.get("SoftHard") == "Soft" else "Hard"][bound] = value
    chosen = ranges["Hard"] or ranges["Soft"]  # the hard (impossible-value) range is the one we keep
    coded = _item_code(item, q)
    return {**coded,
        "label": (_translated(item.find(q("Question")), q) or item.get("Name", "") or item.get("OID", ""))[:255],
        "data_type": _DATA_TYPES.get((item.get("DataType") or "text").lower(), ItemDefinition.DataType.TEXT),
        "units": info.units.get(unit_ref.get("MeasurementUnitOID", ""), "")[:64] if unit_ref is not None else "",
        "codelist_oid": codelist_ref.get("CodeListOID", "") if codelist_ref is not None else "",
        "range_low": chosen.get("low"), "range_high": chosen.get("high"),
    }


# Alias contexts that name a lab test by a standard code, the CDISC test code first (source verification
# maps a lab item to its analyte by them).
_CODE_ALIASES = (("LBTESTCD", "CDISC LBTESTCD"), ("SDTM LBTESTCD", "CDISC LBTESTCD"), ("LOINC", "http://loinc.org"))


def _item_code(item, q) -> dict:
    """The item's standard code from an ODM Alias (LBTESTCD or LOINC), if it has one."""
    aliases = {(a.get("Context") or "").strip().upper(): (a.get("Name") or "").strip()
               for a in item.findall(q("Alias"))}
    for context, system in _CODE_ALIASES:
        if aliases.get(context):
            return {"code": aliases[context][:64], "code_system": system}
    return {}


class StudyFile:
    """What the file has said so far: its main study, OpenClinica site studies, users, locations, and the
    definitions clinical data is checked against."""

    def __init__(self):
        self.main: StudyInfo | None = None
        self.site_studies: dict[str, StudyInfo] = {}
        self.users: dict[str, str] = {}
        self.locations: dict[str, str] = {}
        self.sites: dict[str, Site] = {}
        self.visits: dict[str, VisitDefinition] = {}
        self.forms: dict[str, FormDefinition] = {}
        self.items: dict[str, ItemDefinition] = {}
        self.study_label = ""

    def admin_read(self, element, ns: str) -> None:
        def q(name):
            return f"{{{ns}}}{name}" if ns else name

        for user in element.iter(q("User")):
            full = _clean(user.findtext(q("FullName"))) or _clean(
                f"{user.findtext(q('FirstName')) or ''} {user.findtext(q('LastName')) or ''}")
            if full:
                self.users[user.get("OID", "").strip()] = full
        for location in element.iter(q("Location")):
            self.locations[location.get("OID", "")] = location.get("Name", "")

    def user_label(self, oid: str) -> str:
        oid = (oid or "").strip()
        name = self.users.get(oid)
        return f"{name} ({oid})" if name else oid

    def site_number(self, site_study: StudyInfo) -> str:
        """OpenClinica names a site study "<parent protocol> - <site id>": the site id is the number."""
        parent = self.main.protocol if self.main else ""
        protocol = site_study.protocol
        if parent and protocol.startswith(f"{parent} - "):
            return protocol[len(parent) + 3:].strip()[:32] or site_study.oid[:32]
        return site_study.oid[:32]

    def definitions_load(self, study: Study) -> None:
        self.study_label = study.protocol_id
        self.visits = {v.oid: v for v in VisitDefinition.objects.filter(study=study)}
        self.forms = {f.oid: f for f in FormDefinition.objects.filter(study=study)}
        self.items = {i.oid: i for i in ItemDefinition.objects.filter(study=study)}

    def require(self, kind: str, oid: str, element, subject_key: str) -> None:
        table, label = {"visit": (self.visits, "StudyEventOID"), "form": (self.forms, "FormOID"),
                        "item": (self.items, "ItemOID")}[kind]
        if oid not in table:
            raise ImportFailed(f"Unknown {label} {oid!r}: it is neither in the file's metadata nor defined in study "
                               f"{self.study_label}.", where=f"line {element.sourceline}, SubjectData {subject_key}")


def metadata_apply(*, run: ImportRun, study: Study, info: StudyInfo) -> None:
    """Create or update the study's definitions from the file (idempotent: unchanged ones are not written)."""
    visits = {oid: {"name": (d["name"] or oid)[:255], "order": info.event_order.get(oid, 0),
                    "repeating": d["repeating"]} for oid, d in info.events.items()}
    _upsert(run, VisitDefinition, study, visits, "visit_definitions")
    forms = {oid: {"name": (d["name"] or oid)[:255], "order": index, "repeating": d["repeating"]}
             for index, (oid, d) in enumerate(info.forms.items(), start=1)}
    form_objects = _upsert(run, FormDefinition, study, forms, "form_definitions")
    first_form: dict[str, tuple[str, int]] = {}
    mandatory: set[str] = set()
    for form_oid, form in info.forms.items():
        position = 0
        for group_oid in form["groups"]:
            for item_oid, order, _ in info.groups.get(group_oid, []):
                position += 1
                first_form.setdefault(item_oid, (form_oid, order or position))
    for refs in info.groups.values():
        mandatory |= {item_oid for item_oid, _, required in refs if required}
    items = {}
    for oid, d in info.items.items():
        fields = {k: v for k, v in d.items() if k != "codelist_oid"}
        fields["codelist"] = info.codelists.get(d["codelist_oid"], [])
        fields["mandatory"] = oid in mandatory
        if fields["range_low"] is not None and fields["range_high"] is not None and \
                fields["range_low"] > fields["range_high"]:
            run.warn(f"RangeCheck of {oid} has low > high; the range is not kept.", where=f"ItemDef {oid}")
            fields["range_low"] = fields["range_high"] = None
        if oid in first_form:
            form_oid, order = first_form[oid]
            fields["form_id"], fields["order"] = form_objects[form_oid].pk, order
        items[oid] = fields
    _upsert(run, ItemDefinition, study, items, "item_definitions")


def _upsert(run: ImportRun, model, study: Study, rows: dict[str, dict], label: str) -> dict:
    existing = {o.oid: o for o in model.objects.filter(study=study)}
    new, changed = definitions_sync(run, stored=existing, rows=rows,
                                    build=lambda oid, fields: model(study=study, oid=oid[:128], **fields))
    run.counts[f"{label}_created"] += len(new)
    run.counts[f"{label}_updated"] += len(changed)
    return existing
