"""CDISC ODM 1.3.2 export of a study: its definitions, clinical data, audit trail and queries.

ODM 1.3.2 allows one AuditRecord per ItemData: it carries the latest change. The whole trail (the
source EDC's audit records and our own history) goes in a `trialops:AuditTrail` extension of ODM
AuditRecords, and queries in a `trialops:Query` extension shaped like the ODM 2.0 Query (states,
source, messages). The file is written incrementally (lxml xmlfile), one subject at a time, and the
importer reads it back to the same subjects, visits, values and queries."""

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from lxml import etree
from lxml.builder import ElementMaker

from queries.models import Query
from studies.ingest.odm import ODM_NS, TRIALOPS_NS
from studies.models import DataPoint, FormDefinition, ItemDefinition, SourceAuditRecord, Study, Subject

E = ElementMaker(namespace=ODM_NS, nsmap={None: ODM_NS, "trialops": TRIALOPS_NS})
T = ElementMaker(namespace=TRIALOPS_NS, nsmap={None: ODM_NS, "trialops": TRIALOPS_NS})
_SOURCE = {Query.Origin.RULE: "System", Query.Origin.MANUAL: "Data Management", Query.Origin.IMPORTED: "EDC"}
_DATA_TYPE = {ItemDefinition.DataType.PARTIAL_DATE: "partialDate"}


def _stamp(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat() if moment else ""


def _t(name: str) -> str:
    return f"{{{TRIALOPS_NS}}}{name}"


def odm_export(*, study: Study, out: Path | IO, include_queries: bool = True) -> dict:
    """Write `study` as ODM 1.3.2 to `out` (a path or a binary file object); return what was written."""
    counts = defaultdict(int)
    study_oid = study.oid or study.protocol_id
    with etree.xmlfile(str(out) if isinstance(out, Path) else out, encoding="UTF-8") as xf:
        xf.write_declaration()
        root = {"ODMVersion": "1.3.2", "FileType": "Snapshot", "FileOID": f"TrialOps.{study_oid}.{_now_oid()}",
                "CreationDateTime": _stamp(datetime.now(UTC)), "SourceSystem": "TrialOps"}
        with xf.element(f"{{{ODM_NS}}}ODM", root, nsmap={None: ODM_NS, "trialops": TRIALOPS_NS}):
            xf.write(_study_element(study, study_oid, counts))
            xf.write(_admin_element(study))
            with xf.element(f"{{{ODM_NS}}}ClinicalData", {"StudyOID": study_oid, "MetaDataVersionOID": "MDV.1"}):
                for subject in Subject.objects.filter(study=study).select_related("site").order_by("subject_id"):
                    xf.write(_subject_element(subject, include_queries, counts))
                    counts["subjects"] += 1
    return dict(counts)


def _now_oid() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


def _study_element(study: Study, study_oid: str, counts) -> etree._Element:
    visits = list(study.visit_definitions.order_by("order", "oid"))
    forms = list(FormDefinition.objects.filter(study=study).order_by("order", "oid"))
    items = list(ItemDefinition.objects.filter(study=study).order_by("order", "oid"))
    used = defaultdict(set)  # which forms a visit holds, and which items a form holds, from the data
    for visit_oid, form_oid, item_oid in DataPoint.objects.filter(study=study).values_list(
            "visit__definition__oid", "form__oid", "item__oid").distinct():
        used[("visit", visit_oid)].add(form_oid)
        used[("form", form_oid)].add(item_oid)
    for item in items:
        if item.form_id:
            used[("form", item.form.oid)].add(item.oid)
    repeating_forms = set(DataPoint.objects.filter(study=study).exclude(repeat_key="1").values_list(
        "form__oid", flat=True))
    units = sorted({i.units for i in items if i.units})
    unit_oid = {u: f"MU.{n}" for n, u in enumerate(units, start=1)}
    mdv = E.MetaDataVersion(
        E.Protocol(*[E.StudyEventRef(StudyEventOID=v.oid, OrderNumber=str(v.order or n), Mandatory="No")
                     for n, v in enumerate(visits, start=1)]),
        *[E.StudyEventDef(*[E.FormRef(FormOID=f.oid, Mandatory="No") for f in forms
                            if f.oid in used[("visit", v.oid)]],
                          OID=v.oid, Name=v.name, Repeating="Yes" if v.repeating else "No", Type="Scheduled")
          for v in visits],
        *[E.FormDef(E.ItemGroupRef(ItemGroupOID=f"IG.{f.oid}", Mandatory="No"), OID=f.oid, Name=f.name,
                    Repeating="Yes" if f.repeating else "No") for f in forms],
        *[E.ItemGroupDef(*[E.ItemRef(ItemOID=i.oid, Mandatory="Yes" if i.mandatory else "No",
                                     **({"OrderNumber": str(i.order)} if i.order else {}))
                           for i in items if i.oid in used[("form", f.oid)]],
                         OID=f"IG.{f.oid}", Name=f.name, Repeating="Yes" if f.oid in repeating_forms else "No")
          for f in forms],
        *[_item_def(i, unit_oid) for i in items],
        *[E.CodeList(*[E.CodeListItem(E.Decode(E.TranslatedText(c.get("decode") or "")),
                                      CodedValue=str(c.get("code", ""))) for c in i.codelist],
                     OID=f"CL.{i.oid}", Name=i.oid, DataType="text") for i in items if i.codelist],
        OID="MDV.1", Name="TrialOps export",
    )
    counts["items"] = len(items)
    return E.Study(
        E.GlobalVariables(E.StudyName(study.name), E.StudyDescription(study.name), E.ProtocolName(study.protocol_id)),
        E.BasicDefinitions(*[E.MeasurementUnit(E.Symbol(E.TranslatedText(u)), OID=unit_oid[u], Name=u)
                             for u in units]),
        mdv, OID=study_oid,
    )


def _item_def(item: ItemDefinition, unit_oid: dict) -> etree._Element:
    children = [E.Question(E.TranslatedText(item.label))]
    if item.units:
        children.append(E.MeasurementUnitRef(MeasurementUnitOID=unit_oid[item.units]))
    for value, comparator in ((item.range_low, "GE"), (item.range_high, "LE")):
        if value is not None:
            children.append(E.RangeCheck(E.CheckValue(repr(value)), Comparator=comparator, SoftHard="Hard"))
    if item.codelist:
        children.append(E.CodeListRef(CodeListOID=f"CL.{item.oid}"))
    return E.ItemDef(*children, OID=item.oid, Name=item.label,
                     DataType=_DATA_TYPE.get(item.data_type, item.data_type))


def _admin_element(study: Study) -> etree._Element:
    return E.AdminData(*[E.Location(OID=site.number, Name=site.name, LocationType="Site")
                         for site in study.sites.order_by("number")], StudyOID=study.oid or study.protocol_id)


def _audit(*, user: str, location: str, at: datetime | None, reason: str = "", event: str = "", old: str = "",
           new: str = "", trail: bool = True) -> etree._Element:
    extra = {_t("Event"): event, _t("OldValue"): old, _t("NewValue"): new} if trail else {}
    children = [E.UserRef(UserOID=user or "unknown"), E.LocationRef(LocationOID=location or "-"),
                E.DateTimeStamp(_stamp(at))]
    if reason:
        children.append(E.ReasonForChange(reason))
    return E.AuditRecord(*children, **extra)


def _point_trail(point: DataPoint, sources: list, history: list, location: str) -> list:
    records = [_audit(user=s.user_name, location=s.location, at=s.occurred_at, reason=s.reason, event=s.event,
                      old=s.old_value, new=s.new_value) for s in sources]
    previous = ""
    for row in history:  # our own trail: oldest first, each change with its old and new value
        user = getattr(row.history_user, "username", "") or "system"
        records.append(_audit(user=user, location=location, at=row.history_date, reason=row.history_change_reason or "",
                              event=f"TrialOps {row.get_history_type_display()}", old=previous, new=row.raw_value))
        previous = row.raw_value
    return records


def _subject_element(subject: Subject, include_queries: bool, counts) -> etree._Element:
    location = subject.site.number
    points = list(DataPoint.objects.filter(subject=subject).select_related(
        "visit__definition", "form", "item").order_by("visit__definition__order", "visit__repeat_key", "form__oid",
                                                      "repeat_key", "item__oid"))
    sources = defaultdict(list)
    subject_sources = []
    for record in SourceAuditRecord.objects.filter(subject=subject).order_by("occurred_at", "id"):
        (sources[record.data_point_id] if record.data_point_id else subject_sources).append(record)
    history = defaultdict(list)
    for row in DataPoint.history.filter(subject_id=subject.pk).select_related("history_user").order_by(
            "history_date", "history_id"):
        history[row.id].append(row)
    queries = defaultdict(list)
    if include_queries:
        for query in Query.objects.filter(subject=subject).prefetch_related("messages").order_by("created_at", "id"):
            queries[query.data_point_id].append(query)
    element = E.SubjectData(E.SiteRef(LocationOID=location), SubjectKey=subject.subject_id)
    events = {}
    for point in points:
        visit = point.visit
        event = events.get(visit.pk)
        if event is None:
            attrs = {"StudyEventOID": visit.definition.oid, "StudyEventRepeatKey": visit.repeat_key}
            if visit.actual_date:
                attrs[_t("StartDate")] = visit.actual_date.isoformat()
            event = events[visit.pk] = E.StudyEventData(**attrs)
            element.append(event)
        form_key, _, group_key = point.repeat_key.rpartition(":")
        form_key = form_key or "1"
        form = event[-1] if len(event) and event[-1].get("FormOID") == point.form.oid and \
            event[-1].get("FormRepeatKey") == form_key else None
        if form is None:
            form = E.FormData(FormOID=point.form.oid, FormRepeatKey=form_key)
            event.append(form)
        group = form[-1] if len(form) and form[-1].get("ItemGroupRepeatKey") == group_key else None
        if group is None:
            group = E.ItemGroupData(ItemGroupOID=f"IG.{point.form.oid}", ItemGroupRepeatKey=group_key)
            form.append(group)
        group.append(_item_data(point, sources[point.pk], history[point.pk], queries[point.pk], location))
        counts["data_points"] += 1
    if subject_sources:
        element.append(T.AuditTrail(*[_audit(user=s.user_name, location=s.location, at=s.occurred_at,
                                             reason=s.reason, event=s.event, old=s.old_value, new=s.new_value)
                                      for s in subject_sources]))
    for query in queries[None]:
        element.append(_query(query))
    counts["audit_records"] += sum(len(v) for v in sources.values()) + len(subject_sources) + sum(
        len(v) for v in history.values())
    counts["queries"] += sum(len(v) for v in queries.values())
    return element


def _item_data(point: DataPoint, sources, history, queries, location: str) -> etree._Element:
    attrs = {"ItemOID": point.item.oid}
    if point.raw_value == "":
        attrs["IsNull"] = "Yes"
    else:
        attrs["Value"] = point.raw_value
    element = E.ItemData(**attrs)
    latest = history[-1] if history else None
    if latest is not None:  # the schema's single AuditRecord: who made the current value, when and why
        element.append(_audit(user=point.entered_by or getattr(latest.history_user, "username", ""),
                              location=location, at=point.entered_at or latest.history_date,
                              reason=latest.history_change_reason or "", trail=False))
    trail = _point_trail(point, sources, history, location)
    if trail:
        element.append(T.AuditTrail(*trail))
    for query in queries:
        element.append(_query(query))
    return element


def _query(query: Query) -> etree._Element:
    attrs = {"OID": f"Q.{query.pk}", "State": query.get_state_display(), "Source": _SOURCE.get(query.origin, "EDC"),
             "Origin": query.origin, "Category": query.category, "Severity": query.severity,
             "Recipient": query.recipient, "CreatedDateTime": _stamp(query.created_at)}
    if query.external_id:
        attrs["ExternalID"] = query.external_id
    if query.rule_code:
        attrs["RuleCode"] = query.rule_code
    if query.answered_at:
        attrs["AnsweredDateTime"] = _stamp(query.answered_at)
    if query.closed_at:
        attrs["ClosedDateTime"] = _stamp(query.closed_at)
    messages = [T.Message(m.text, Kind=m.kind, Author=m.author_name or getattr(m.author, "username", ""),
                          DateTimeStamp=_stamp(m.created_at)) for m in query.messages.all()]
    return T.Query(T.Value(query.text), *messages, **attrs)
