"""CDISC ODM import: definitions, clinical data, source audit trails and vendor queries, re-imports."""

from collections import Counter
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from queries.models import Query, QueryMessage
from studies.ingest import odm
from studies.ingest.odm import odm_import
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
from tests.factories import UserFactory

FIXTURES = Path(__file__).parent / "data" / "odm"
ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"

METADATA = """
<Study OID="S.T">
  <GlobalVariables><StudyName>Trial T</StudyName><StudyDescription>t</StudyDescription>
    <ProtocolName>T-001</ProtocolName></GlobalVariables>
  <BasicDefinitions><MeasurementUnit OID="MU.KG" Name="kg"><Symbol><TranslatedText>kg</TranslatedText></Symbol>
    </MeasurementUnit></BasicDefinitions>
  <MetaDataVersion OID="MDV.1" Name="v1">
    <Protocol><StudyEventRef StudyEventOID="SE.BASE" OrderNumber="1" Mandatory="Yes"/>
      <StudyEventRef StudyEventOID="SE.FU" OrderNumber="2" Mandatory="No"/></Protocol>
    <StudyEventDef OID="SE.BASE" Name="Baseline" Repeating="No" Type="Scheduled">
      <FormRef FormOID="F.VS" Mandatory="Yes"/></StudyEventDef>
    <StudyEventDef OID="SE.FU" Name="Follow-up" Repeating="Yes" Type="Scheduled">
      <FormRef FormOID="F.CM" Mandatory="No"/></StudyEventDef>
    <FormDef OID="F.VS" Name="Vital signs" Repeating="No"><ItemGroupRef ItemGroupOID="IG.VS" Mandatory="Yes"/></FormDef>
    <FormDef OID="F.CM" Name="Con meds" Repeating="No"><ItemGroupRef ItemGroupOID="IG.CM" Mandatory="No"/></FormDef>
    <ItemGroupDef OID="IG.VS" Name="VS" Repeating="No">
      <ItemRef ItemOID="I.WEIGHT" OrderNumber="1" Mandatory="Yes"/>
      <ItemRef ItemOID="I.SEX" OrderNumber="2" Mandatory="No"/>
      <ItemRef ItemOID="I.NOTE" OrderNumber="3" Mandatory="No"/></ItemGroupDef>
    <ItemGroupDef OID="IG.CM" Name="CM" Repeating="Yes"><ItemRef ItemOID="I.CMTRT" Mandatory="No"/></ItemGroupDef>
    <ItemDef OID="I.WEIGHT" Name="WEIGHT" DataType="float"><Question><TranslatedText>Body weight</TranslatedText>
      </Question><MeasurementUnitRef MeasurementUnitOID="MU.KG"/>
      <RangeCheck Comparator="GE" SoftHard="Hard"><CheckValue>20</CheckValue></RangeCheck>
      <RangeCheck Comparator="LE" SoftHard="Hard"><CheckValue>300</CheckValue></RangeCheck></ItemDef>
    <ItemDef OID="I.SEX" Name="Sex" DataType="text"><CodeListRef CodeListOID="CL.SEX"/></ItemDef>
    <ItemDef OID="I.NOTE" Name="Note" DataType="string"/>
    <ItemDef OID="I.CMTRT" Name="Medication" DataType="text"/>
    <CodeList OID="CL.SEX" Name="Sex" DataType="text">
      <CodeListItem CodedValue="F"><Decode><TranslatedText>Female</TranslatedText></Decode></CodeListItem>
      <CodeListItem CodedValue="M"><Decode><TranslatedText>Male</TranslatedText></Decode></CodeListItem></CodeList>
  </MetaDataVersion>
</Study>
<AdminData StudyOID="S.T"><User OID="U.1"><FullName>Ada Lovelace</FullName></User>
  <Location OID="LOC.7" Name="Hopital Nord" LocationType="Site"/></AdminData>"""


def subject_xml(key: str, *, weight: str = "70", meds=("Aspirin", "Ibuprofen"), item_tail: str = "",
                subject_tail: str = "", weight_oid: str = "I.WEIGHT") -> str:
    groups = "".join(f'<ItemGroupData ItemGroupOID="IG.CM" ItemGroupRepeatKey="{n}">'
                     f'<ItemData ItemOID="I.CMTRT" Value="{med}"/></ItemGroupData>' for n, med in enumerate(meds, 1))
    return f"""
<SubjectData SubjectKey="{key}"><SiteRef LocationOID="LOC.7"/>
  <StudyEventData StudyEventOID="SE.BASE" OpenClinica:StartDate="2025-03-01">
    <FormData FormOID="F.VS"><ItemGroupData ItemGroupOID="IG.VS">
      <ItemData ItemOID="{weight_oid}" Value="{weight}"><AuditRecord><UserRef UserOID="U.1"/>
        <LocationRef LocationOID="LOC.7"/><DateTimeStamp>2025-03-01T10:00:00Z</DateTimeStamp>
        <ReasonForChange>initial entry</ReasonForChange></AuditRecord>{item_tail}</ItemData>
      <ItemDataString ItemOID="I.SEX">F</ItemDataString>
      <ItemData ItemOID="I.NOTE" IsNull="Yes"/>
    </ItemGroupData></FormData></StudyEventData>
  <StudyEventData StudyEventOID="SE.FU" StudyEventRepeatKey="2"><FormData FormOID="F.CM">{groups}</FormData>
  </StudyEventData>{subject_tail}
</SubjectData>"""


def write_odm(path: Path, body: str, *, metadata: bool = True, version: str = "1.3.2") -> Path:
    path.write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ODM xmlns="{ODM_NS}" '
        'xmlns:OpenClinica="http://www.openclinica.org/ns/odm_ext_v130/v3.1" '
        'xmlns:mdsol="http://www.mdsol.com/ns/odm/metadata" xmlns:acme="https://acme.example/odm" '
        f'ODMVersion="{version}" FileType="Snapshot" FileOID="T.1" CreationDateTime="2025-03-01T00:00:00Z">'
        f'{METADATA if metadata else ""}<ClinicalData StudyOID="S.T" MetaDataVersionOID="MDV.1">{body}'
        "</ClinicalData></ODM>", encoding="utf-8")
    return path


@pytest.fixture
def actor(db):
    return UserFactory(username="odm.importer")


def load(path: Path, actor, **kwargs) -> Import:
    return odm_import(path=path, actor=actor, **kwargs)


def stored_state() -> tuple:
    return (Study.objects.count(), Site.objects.count(), Subject.objects.count(), SubjectVisit.objects.count(),
            DataPoint.objects.count(), DataPoint.history.count(), SourceAuditRecord.objects.count(),
            Query.objects.count(), QueryMessage.objects.count(), ItemDefinition.history.count())


# -- behaviour, on small files written here ---------------------------------------------------------
def test_metadata_becomes_the_studys_definitions(tmp_path, actor):
    record = load(write_odm(tmp_path / "t.xml", subject_xml("001")), actor)

    assert record.status == Import.Status.SUCCEEDED, record.errors
    study = Study.objects.get(oid="S.T")
    assert (study.protocol_id, study.name) == ("T-001", "Trial T")
    assert list(VisitDefinition.objects.filter(study=study).values_list("oid", "order", "repeating")) == [
        ("SE.BASE", 1, False), ("SE.FU", 2, True)]
    weight = ItemDefinition.objects.get(study=study, oid="I.WEIGHT")
    assert (weight.label, weight.data_type, weight.units, weight.range_low, weight.range_high, weight.mandatory,
            weight.form.oid) == ("Body weight", "float", "kg", 20.0, 300.0, True, "F.VS")
    sex = ItemDefinition.objects.get(study=study, oid="I.SEX")
    assert sex.codelist == [{"code": "F", "decode": "Female"}, {"code": "M", "decode": "Male"}]
    assert ItemDefinition.objects.get(study=study, oid="I.NOTE").data_type == "text"
    assert ItemDefinition.history.filter(history_change_reason=f"EDC sync {record.pk}").count() == 4


def test_clinical_data_becomes_subjects_visits_and_data_points(tmp_path, actor):
    record = load(write_odm(tmp_path / "t.xml", subject_xml("001") + subject_xml("002", weight="81.5")), actor)

    assert record.counts["subjects_created"] == 2 and record.counts["data_points_created"] == 10
    subject = Subject.objects.get(subject_id="002")
    assert (subject.site.number, subject.site.name, subject.site.country) == ("LOC.7", "Hopital Nord", "XX")
    assert any("placeholder country XX" in w["message"] for w in record.errors)
    base = SubjectVisit.objects.get(subject=subject, definition__oid="SE.BASE")
    assert base.actual_date.isoformat() == "2025-03-01"
    weight = DataPoint.objects.get(subject=subject, item__oid="I.WEIGHT")
    assert (weight.raw_value, weight.value_number, weight.entered_by) == ("81.5", 81.5, "Ada Lovelace (U.1)")
    assert weight.entered_at.isoformat() == "2025-03-01T10:00:00+00:00"
    assert DataPoint.objects.get(subject=subject, item__oid="I.SEX").raw_value == "F"  # typed ItemDataString
    assert DataPoint.objects.get(subject=subject, item__oid="I.NOTE").raw_value == ""  # IsNull="Yes"
    audit = SourceAuditRecord.objects.get(data_point=weight)
    assert (audit.user_name, audit.reason, audit.location, audit.new_value) == (
        "Ada Lovelace (U.1)", "initial entry", "LOC.7", "81.5")


def test_repeating_item_groups_are_kept_apart(tmp_path, actor):
    load(write_odm(tmp_path / "t.xml", subject_xml("001", meds=("Aspirin", "Ibuprofen", "Aspirin"))), actor)

    meds = DataPoint.objects.filter(item__oid="I.CMTRT").order_by("repeat_key")
    assert [(p.visit.repeat_key, p.repeat_key, p.raw_value) for p in meds] == [
        ("2", "1", "Aspirin"), ("2", "2", "Ibuprofen"), ("2", "3", "Aspirin")]


def test_a_reimport_of_the_same_file_writes_nothing(tmp_path, actor):
    path = write_odm(tmp_path / "t.xml", subject_xml("001") + subject_xml("002"))
    load(path, actor)
    before = stored_state()

    again = load(path, actor)

    assert again.status == Import.Status.SUCCEEDED
    assert stored_state() == before
    assert again.counts["data_points_unchanged"] == 10
    assert not any(again.counts.get(k) for k in ("data_points_created", "data_points_changed", "subjects_created",
                                                  "visits_created", "source_audit_records_created",
                                                  "item_definitions_updated", "item_definitions_created"))


def test_a_changed_value_is_updated_with_the_sync_reason(tmp_path, actor):
    load(write_odm(tmp_path / "a.xml", subject_xml("001")), actor)
    second = load(write_odm(tmp_path / "b.xml", subject_xml("001", weight="72")), actor)

    assert second.counts["data_points_changed"] == 1
    point = DataPoint.objects.get(item__oid="I.WEIGHT")
    assert (point.raw_value, point.version) == ("72", 2)
    latest = point.history.latest()
    assert latest.history_change_reason == f"EDC sync {second.pk}"
    assert latest.history_user.username == "odm.importer"


def test_a_full_snapshot_flags_values_it_no_longer_holds(tmp_path, actor):
    load(write_odm(tmp_path / "a.xml", subject_xml("001")), actor)
    snapshot = load(write_odm(tmp_path / "b.xml", subject_xml("001", meds=("Aspirin",))), actor, full_snapshot=True)

    assert snapshot.counts["data_points_missing_in_source"] == 1
    gone = DataPoint.objects.get(item__oid="I.CMTRT", repeat_key="2")
    assert gone.missing_in_source and gone.raw_value == "Ibuprofen"


def test_a_flagged_value_back_in_the_edc_unchanged_loses_its_flag_as_a_change(tmp_path, actor):
    load(write_odm(tmp_path / "a.xml", subject_xml("001")), actor)
    load(write_odm(tmp_path / "b.xml", subject_xml("001", meds=("Aspirin",))), actor, full_snapshot=True)
    back = load(write_odm(tmp_path / "c.xml", subject_xml("001")), actor)

    assert back.counts["data_points_changed"] == 1 and not back.counts.get("data_points_created")
    point = DataPoint.objects.get(item__oid="I.CMTRT", repeat_key="2")
    assert (point.missing_in_source, point.raw_value, point.version) == (False, "Ibuprofen", 2)
    assert point.history.latest().history_change_reason == f"EDC sync {back.pk}"


def test_a_failure_mid_file_leaves_the_study_exactly_as_it_was(tmp_path, actor, monkeypatch):
    load(write_odm(tmp_path / "a.xml", subject_xml("001")), actor)
    before = stored_state()
    monkeypatch.setattr(odm, "SUBJECT_BATCH", 1)  # subject 001 is written before 002 fails
    body = subject_xml("001", weight="99") + subject_xml("003") + subject_xml("002", weight_oid="I.NOPE")

    failed = load(write_odm(tmp_path / "b.xml", body), actor)

    assert failed.status == Import.Status.FAILED
    assert "Unknown ItemOID 'I.NOPE'" in failed.errors[0]["message"]
    assert "SubjectData 002" in failed.errors[0]["where"] and failed.errors[0]["where"].startswith("line ")
    assert stored_state() == before
    assert DataPoint.objects.get(item__oid="I.WEIGHT").raw_value == "70"


def test_audit_records_are_accepted_in_any_order_and_not_duplicated(tmp_path, actor):
    out_of_order = """<AuditRecord><UserRef UserOID="U.1"/><LocationRef LocationOID="-"/>
        <DateTimeStamp>2025-03-02T08:00:00Z</DateTimeStamp></AuditRecord>"""
    path = write_odm(tmp_path / "t.xml", subject_xml("001", subject_tail=out_of_order))
    load(path, actor)
    load(path, actor)

    subject_level = SourceAuditRecord.objects.get(data_point__isnull=True)
    assert (subject_level.subject.subject_id, subject_level.user_name) == ("001", "Ada Lovelace (U.1)")
    assert SourceAuditRecord.objects.count() == 2


def test_a_rave_query_becomes_a_query_and_unknown_extensions_are_ignored(tmp_path, actor):
    rave = ('<mdsol:Query QueryRepeatKey="1" Value="Weight above range, please verify." Status="Answered" '
            'Recipient="Site from System" Response="Verified against source."/>'
            '<acme:Whatever acme:x="1"><acme:Deep/></acme:Whatever>')
    path = write_odm(tmp_path / "t.xml", subject_xml("001", item_tail=rave))
    record = load(path, actor)
    load(path, actor)

    assert record.status == Import.Status.SUCCEEDED, record.errors
    query = Query.objects.get()
    assert (query.state, query.origin, query.text, query.data_point.item.oid) == (
        "answered", "imported", "Weight above range, please verify.", "I.WEIGHT")
    assert [m.kind for m in query.messages.all()] == ["question", "answer"]


def test_a_query_we_raised_in_rave_is_not_imported_back_as_a_new_one(tmp_path, actor):
    ours = ('<mdsol:Query QueryRepeatKey="TQ-41" Value="Weight: please verify against source." Status="Open"/>'
            '<mdsol:Query QueryRepeatKey="2" Value="Weight above range, please verify." Status="Open"/>')
    record = load(write_odm(tmp_path / "t.xml", subject_xml("001", item_tail=ours)), actor)

    assert record.status == Import.Status.SUCCEEDED, record.errors
    assert list(Query.objects.values_list("text", flat=True)) == ["Weight above range, please verify."]


def test_the_command_prints_a_summary_and_fails_with_the_reason(tmp_path, actor, capsys):
    call_command("import_odm", str(write_odm(tmp_path / "t.xml", subject_xml("001"))))
    out = capsys.readouterr().out.strip()
    assert out.startswith("Import ") and "into T-001 succeeded" in out and "data_points_created=5" in out
    assert len(out.splitlines()) == 1

    with pytest.raises(CommandError, match="Unknown ItemOID 'I.NOPE'"):
        call_command("import_odm", str(write_odm(tmp_path / "b.xml", subject_xml("009", weight_oid="I.NOPE"))),
                     "--study", "S.T")
    with pytest.raises(CommandError, match="No study"):
        call_command("import_odm", str(tmp_path / "t.xml"), "--study", "NOPE")


# -- every file under ../shared/data/odm --------------------------------------------------------------
JUNO = "openclinica_juno_demo/JUNO_DEMO_odm1.3_fullExtract_All_Data_2016-08-01-081433593.xml"
SHARED = {
    # file: (subjects, visits, data points, source audit records, queries, query messages,
    #        visit / form / item definitions, sites)
    JUNO: (22, 86, 3908, 5174, 23, 27, (6, 20, 311), 5),
    "openclinica_r01_nsclc/extract.xml": (13, 22, 769, 179, 4, 4, (4, 8, 143), 3),
    "redcap_phpcap/PHPCapLongitudinalData.REDCap.xml": (100, 686, 10194, 0, 0, 0, (14, 5, 70), 1),
    "redcap_phpcap/RepeatingEvents.REDCap.xml": (100, 500, 9968, 0, 0, 0, (12, 5, 45), 1),
    "odmlib_testdata/odm-data-snapshot.xml": (2, 8, 165, 0, 0, 0, (4, 7, 52), 1),
    "odmlib_testdata/cdash-odm-test.xml": (0, 0, 0, 0, 0, 0, (1, 4, 52), 0),
}


def counts_of(study: Study) -> tuple:
    return (Subject.objects.filter(study=study).count(), SubjectVisit.objects.filter(study=study).count(),
            DataPoint.objects.filter(study=study).count(), SourceAuditRecord.objects.filter(study=study).count(),
            Query.objects.filter(study=study).count(), QueryMessage.objects.filter(query__study=study).count(),
            (VisitDefinition.objects.filter(study=study).count(), FormDefinition.objects.filter(study=study).count(),
             ItemDefinition.objects.filter(study=study).count()), Site.objects.filter(study=study).count())


@pytest.mark.shared_data
@pytest.mark.parametrize("name", SHARED)
def test_each_shared_odm_file_loads_with_its_counts(shared_data, actor, name):
    record = load(shared_data / "odm" / name, actor)

    assert record.status == Import.Status.SUCCEEDED, record.errors
    assert counts_of(record.study) == SHARED[name]
    assert record.counts.get("data_points_created", 0) == SHARED[name][2]
    again = load(shared_data / "odm" / name, actor)  # idempotent on the real files too
    assert counts_of(again.study) == SHARED[name]
    assert again.counts.get("data_points_created", 0) == 0 and again.counts.get("data_points_changed", 0) == 0


@pytest.mark.shared_data
def test_openedc_metadata_then_clinical_data_with_out_of_order_audit_records(shared_data, actor):
    metadata = load(shared_data / "odm/openedc/metadata.xml", actor)
    clinical = load(shared_data / "odm/openedc/clinicaldata.xml", actor)

    assert clinical.status == Import.Status.SUCCEEDED, clinical.errors
    assert clinical.study == metadata.study and metadata.study.oid == "S.1"
    assert counts_of(clinical.study) == (90, 249, 1684, 90, 0, 0, (3, 5, 28), 1)
    audit = SourceAuditRecord.objects.filter(subject__subject_id="01").get()
    assert (audit.user_name, audit.location, audit.occurred_at.isoformat()) == (
        "U.1", "-", "2020-01-13T12:18:48.865000+00:00")


@pytest.mark.shared_data
def test_odmlib_clinical_data_loads_after_its_metadata(shared_data, actor):
    metadata = load(FIXTURES / "p2006_101_metadata.xml", actor)
    clinical = load(shared_data / "odm/odmlib_testdata/test_clinical_data_01.xml", actor)

    assert clinical.status == Import.Status.SUCCEEDED, clinical.errors
    assert counts_of(metadata.study)[:3] == (1, 2, 10)
    assert DataPoint.objects.get(visit__definition__oid="VISIT_1", item__oid="LBORRES").value_number == 300.0


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["ae.xml", "dm.xml", "lb.xml"])
def test_dataset_xml_files_are_refused_as_not_edc_data(shared_data, actor, name):
    record = load(shared_data / "odm/odmlib_testdata" / name, actor)

    assert record.status == Import.Status.FAILED
    assert "Dataset-XML" in record.errors[0]["message"]
    assert Study.objects.count() == 0


@pytest.mark.shared_data
def test_openclinica_discrepancy_notes_become_query_threads(shared_data, actor):
    record = load(shared_data / "odm" / JUNO, actor)

    threads = Query.objects.filter(study=record.study)
    assert threads.count() == 23 and all(q.origin == "imported" for q in threads)
    # New 9 + Updated 2 -> open; Closed 2 + Not Applicable 10 -> closed
    assert dict(Counter(threads.values_list("state", flat=True))) == {"open": 11, "closed": 12}
    fever = threads.get(external_id="DN_39")
    assert (fever.state, fever.subject.subject_id, fever.data_point.item.oid, fever.data_point.raw_value) == (
        "open", fever.data_point.subject.subject_id, "I_VITAL_VS_TEMP", "103")
    assert fever.created_at.isoformat() == "2015-08-21T00:00:00+00:00"
    assert [(m.kind, m.author_name, m.text) for m in fever.messages.all()] == [
        ("question", "James Madison (USR_3)", "I_VITAL_VS_TEMP_F Temperature should be between 97.6 and 99.6 if in "
                                              "degrees Fahrenheit. Please verify your response."),
        ("note", "John Adams (USR_11)", "Was fever resolved?\nWas fever resolved?")]
    assert threads.get(external_id="DN_43").state == "closed"
    # The item's entered_by/entered_at come from its latest audit-log entry.
    assert (fever.data_point.entered_by, fever.data_point.entered_at.isoformat()) == (
        "James Madison (USR_3)", "2015-08-21T20:24:12+00:00")
    assert SourceAuditRecord.objects.filter(data_point=fever.data_point).count() == 2



def big_odm(path: Path, *, subjects: int = 1000, follow_ups: int = 49) -> Path:
    """A synthetic ODM file of subjects x (1 + follow_ups) x 2 data points (1000 x 50 x 2 = 100,000), written
    streaming; for the speed benchmark, not a timed test:
    `.venv/bin/python manage.py shell -c "from tests.test_ingest_odm import bench; bench()"`."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<ODM xmlns="{ODM_NS}" '
                  'xmlns:OpenClinica="http://www.openclinica.org/ns/odm_ext_v130/v3.1" ODMVersion="1.3.2" '
                  f'FileType="Snapshot" FileOID="BIG" CreationDateTime="2025-03-01T00:00:00Z">{METADATA}'
                  '<ClinicalData StudyOID="S.T" MetaDataVersionOID="MDV.1">')
        for n in range(subjects):
            visits = "".join(
                f'<StudyEventData StudyEventOID="SE.FU" StudyEventRepeatKey="{v}"><FormData FormOID="F.CM">'
                f'<ItemGroupData ItemGroupOID="IG.CM" ItemGroupRepeatKey="1"><ItemData ItemOID="I.CMTRT" Value="A{v}"/>'
                f'</ItemGroupData><ItemGroupData ItemGroupOID="IG.CM" ItemGroupRepeatKey="2">'
                f'<ItemData ItemOID="I.CMTRT" Value="B{v}"/></ItemGroupData></FormData></StudyEventData>'
                for v in range(1, follow_ups + 1))
            out.write(f'<SubjectData SubjectKey="S{n:05d}"><SiteRef LocationOID="LOC.7"/>'
                      '<StudyEventData StudyEventOID="SE.BASE"><FormData FormOID="F.VS"><ItemGroupData '
                      f'ItemGroupOID="IG.VS"><ItemData ItemOID="I.WEIGHT" Value="{60 + n % 40}"/>'
                      f'<ItemData ItemOID="I.SEX" Value="F"/></ItemGroupData></FormData></StudyEventData>{visits}'
                      "</SubjectData>")
        out.write("</ClinicalData></ODM>")
    return path


def bench(path: Path = Path("/tmp/odm_100k.xml")) -> None:  # pragma: no cover - a benchmark, run by hand
    import time

    from django.contrib.auth import get_user_model

    big_odm(path)
    actor, _ = get_user_model().objects.get_or_create(username="bench.odm")
    started = time.monotonic()
    record = odm_import(path=path, actor=actor)
    print(f"{record.status}: {record.counts.get('data_points_created')} data points in "
          f"{time.monotonic() - started:.2f}s ({path.stat().st_size:,} bytes)")
