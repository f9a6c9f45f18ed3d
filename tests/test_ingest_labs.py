"""Lab results in: HL7 v2 and FHIR R4 files, real ones from ../shared/data, and bad input."""

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from studies.ingest.labs import fhir_results, hl7_results, labs_import, reference_range
from studies.models import DataPoint, FormDefinition, Import, ItemDefinition, SubjectVisit, VisitDefinition
from tests.factories import SiteFactory, SubjectFactory, UserFactory

pytestmark = pytest.mark.django_db

# The patient ids the shared files name (PID-3 / Patient.identifier / Patient.id).
PATIENTS = ["10006579", "PATID1234", "14", "555-44-4444", "00000-0000000", "example"]

# Lab values each shared file loads when all its patients are subjects of the study.
EXPECTED_VALUES = {
    "hl7v2/LAB-ORU-1.hl7": 8,  # 10 OBX, 2 pending without a value
    "hl7v2/LAB-ORU-2.hl7": 10,
    "hl7v2/LRI_2.0-NG_CBC_Typ_Message.hl7": 28,
    "hl7v2/ORU-R01-01.hl7": 3,  # 27~25 is two results; RP/ED pointers reported, not loaded
    "hl7v2/ORU-R01-RMGEAD.hl7": 1,
    "hl7v2/OML-O21-01.hl7": 0,  # an order: "not a result message"
    "hl7v2/ORM-O01-01.hl7": 0,
    "hl7v2/OUL-R22-01.hl7": 4,  # heart rates 60~120 and 160~120; slide images skipped
    "hl7v2/OUL-R22-02.hl7": 5,
    "hl7v2/OUL-R23-01.hl7": 3,
    "hl7v2/OUL-R24-01.hl7": 2,
    "fhir_r4/fhir_converter_expected_from_oru/LAB-ORU-1-expected.json": 8,
    "fhir_r4/fhir_converter_expected_from_oru/LAB-ORU-2-expected.json": 10,
    "fhir_r4/fhir_converter_expected_from_oru/LRI_2.0-NG_CBC_Typ_Message-expected.json": 28,
    "fhir_r4/fhir_converter_expected_from_oru/ORU-R01-01-expected.json": 3,
    "fhir_r4/fhir_converter_expected_from_oru/ORU-R01-RMGEAD-expected.json": 1,
}


@pytest.fixture
def study_with_patients(db):
    site = SiteFactory()
    for patient in PATIENTS:
        SubjectFactory(site=site, subject_id=patient)
    return site.study


@pytest.fixture
def actor(db):
    return UserFactory(username="lab.importer")


def _files(shared_data: Path) -> list[Path]:
    return sorted([*(shared_data / "hl7v2").glob("*.hl7"), *(shared_data / "fhir_r4").rglob("*.json")])


@pytest.mark.shared_data
def test_every_shared_lab_file_loads(shared_data, study_with_patients, actor):
    counts = {}
    for path in _files(shared_data):
        record = labs_import(paths=[path], study=study_with_patients, actor=actor)
        assert record.status == Import.Status.SUCCEEDED, (path.name, record.errors)
        assert record.counts.get("unknown_subjects", 0) == 0, (path.name, record.errors)
        counts[str(path.relative_to(shared_data))] = record.counts.get("lab_values", 0)
    for name, expected in EXPECTED_VALUES.items():
        assert counts[name] == expected, name
    us_core = {name: n for name, n in counts.items() if "us_core_examples" in name}
    assert us_core["fhir_r4/us_core_examples/observation-cbc-hemoglobin.json"] == 1
    assert us_core["fhir_r4/us_core_examples/vitals-blood-pressure.json"] == 2  # two components
    assert us_core["fhir_r4/us_core_examples/diagnosticreport-cbc.json"] == 0  # results not in the file
    assert sum(us_core.values()) == 28


@pytest.mark.shared_data
def test_an_oru_message_stores_code_value_units_range_flag_and_time(shared_data, study_with_patients, actor):
    record = labs_import(paths=[shared_data / "hl7v2/LRI_2.0-NG_CBC_Typ_Message.hl7"], study=study_with_patients,
                         actor=actor)
    assert record.counts["data_points_created"] == 28
    point = DataPoint.objects.get(item__oid="LB.718-7", subject__subject_id="PATID1234")
    assert (point.raw_value, point.value_number, point.units) == ("12.5", 12.5, "g/mL")
    assert (point.normal_low, point.normal_high, point.abnormal_flag) == (13.0, 18.0, "L")
    assert point.collected_at == datetime(2011, 1, 3, 22, 34, 28, tzinfo=UTC)
    assert point.form.oid == "LB" and point.visit.definition.name == "Unscheduled lab"
    assert point.visit.actual_date.isoformat() == "2011-01-03"
    item = ItemDefinition.objects.get(oid="LB.718-7")
    assert (item.code, item.code_system, item.data_type) == ("718-7", "http://loinc.org", "float")
    assert point.history.get().history_change_reason == f"EDC sync {record.pk}"
    assert point.history.get().history_user == actor
    coded = DataPoint.objects.get(item__oid="LB.38892-6")
    assert (coded.raw_value, coded.abnormal_flag) == ("Present ++ out of ++++", "A")


def _values(results) -> list[tuple]:
    return sorted(
        (r.code, float(r.value) if r.numeric else r.value, r.units, r.normal_low, r.normal_high, r.abnormal_flag,
         r.patient_ids[0] if r.patient_ids else "")
        for r in results
    )


@pytest.mark.shared_data
@pytest.mark.parametrize("stem", ["LAB-ORU-1", "LAB-ORU-2", "LRI_2.0-NG_CBC_Typ_Message", "ORU-R01-01",
                                  "ORU-R01-RMGEAD"])
def test_each_hl7_message_gives_the_values_of_its_expected_fhir_bundle(shared_data, stem):
    noop = lambda message, where: None  # noqa: E731
    hl7_side = list(hl7_results((shared_data / f"hl7v2/{stem}.hl7").read_text("utf-8-sig"), noop, Counter()))
    fhir_path = shared_data / f"fhir_r4/fhir_converter_expected_from_oru/{stem}-expected.json"
    fhir_side = list(fhir_results(fhir_path.read_text(), noop, Counter()))
    assert hl7_side and _values(hl7_side) == _values(fhir_side)
    # Same instants where the converter kept an observation time.
    fhir_times = {(r.code, r.value): r.collected_at for r in fhir_side if r.collected_at}
    for result in hl7_side:
        if (result.code, result.value) in fhir_times:
            assert result.collected_at == fhir_times[(result.code, result.value)]


@pytest.mark.shared_data
def test_a_final_result_replaces_the_preliminary_one_with_the_import_as_reason(shared_data, study_with_patients,
                                                                               actor):
    first = labs_import(paths=[shared_data / "hl7v2/LAB-ORU-1.hl7"], study=study_with_patients, actor=actor)
    second = labs_import(paths=[shared_data / "hl7v2/LAB-ORU-2.hl7"], study=study_with_patients, actor=actor)
    assert first.counts["data_points_created"] == 8
    assert (second.counts["data_points_created"], second.counts["data_points_changed"]) == (2, 8)
    hct = DataPoint.objects.get(item__oid="LB.20570-8")
    assert (hct.raw_value, hct.version) == ("39.7", 2)
    assert hct.history.latest().history_change_reason == f"EDC sync {second.pk}"
    again = labs_import(paths=[shared_data / "hl7v2/LAB-ORU-2.hl7"], study=study_with_patients, actor=actor)
    assert again.counts["data_points_unchanged"] == 10 and again.counts["data_points_changed"] == 0


@pytest.mark.shared_data
def test_an_unknown_subject_is_reported_not_invented(shared_data, actor):
    study = SiteFactory().study
    SubjectFactory(site=study.sites.get(), subject_id="SOMEONE-ELSE")
    record = labs_import(paths=[shared_data / "hl7v2/LAB-ORU-2.hl7"], study=study, actor=actor)
    assert record.status == Import.Status.SUCCEEDED
    assert record.counts["unknown_subjects"] == 1 and record.counts["values_for_unknown_subjects"] == 10
    assert any("10006579" in e["message"] for e in record.errors)
    assert not DataPoint.objects.exists()
    assert study.subjects.count() == 1


@pytest.mark.shared_data
def test_order_messages_are_reported_as_not_result_messages(shared_data, study_with_patients, actor):
    record = labs_import(paths=[shared_data / "hl7v2/OML-O21-01.hl7"], study=study_with_patients, actor=actor)
    assert record.counts["not_result_messages"] == 1
    assert "not a result message" in record.errors[0]["message"]


LINE_ENDINGS_MESSAGE = (
    "MSH|^~\\&|LAB|SITE|TRIALOPS|SPONSOR|20250301101500+0100||ORU^R01|MSG1|P|2.5.1\n"
    "PID|1||{patient}^^^SITE^MR\n"
    "OBR|1|ORD1|FIL1|24323-8^CMP^LN|||20250301080000+0100\n"
    "OBX|1|NM|2823-3^Potassium^LN||5.6|mmol/L|3.5-5.0|H|||F|||20250301080000+0100\n"
    "OBX|2|NM|2160-0^Creatinine^LN||0.9|mg/dL|<1.3|N|||F\n"
    "OBX|3|SN|1742-6^ALT^LN||^48|U/L|>10|N|||F\n"
)


@pytest.mark.parametrize("ending, bom", [("\r", False), ("\n", False), ("\r\n", True)])
def test_any_segment_ending_and_a_bom_are_tolerated(tmp_path, ending, bom, actor):
    subject = SubjectFactory(subject_id="P-001")
    path = tmp_path / "msg.hl7"
    text = LINE_ENDINGS_MESSAGE.format(patient="P-001").replace("\n", ending)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    record = labs_import(paths=[path], study=subject.study, actor=actor)
    assert record.counts["lab_values"] == 3, record.errors
    potassium = DataPoint.objects.get(item__oid="LB.2823-3")
    assert (potassium.value_number, potassium.normal_low, potassium.normal_high, potassium.abnormal_flag) == (
        5.6, 3.5, 5.0, "H")
    assert DataPoint.objects.get(item__oid="LB.2160-0").normal_high == 1.3
    assert DataPoint.objects.get(item__oid="LB.1742-6").normal_low == 10.0


def test_reference_ranges_are_parsed():
    assert reference_range("3.5-5.0") == (3.5, 5.0)
    assert reference_range("4.3 to 6.2") == (4.3, 6.2)
    assert reference_range("<5") == (None, 5.0)
    assert reference_range(">10") == (10.0, None)
    assert reference_range("negative") == (None, None)


def test_a_message_without_msh_fails_and_leaves_the_study_as_it_was(tmp_path, actor):
    subject = SubjectFactory(subject_id="P-001")
    good = tmp_path / "good.hl7"
    good.write_text(LINE_ENDINGS_MESSAGE.format(patient="P-001"))
    bad = tmp_path / "bad.hl7"
    bad.write_text("PID|1||P-001\nOBX|1|NM|2823-3^Potassium^LN||4.0|mmol/L\n")
    record = labs_import(paths=[good, bad], study=subject.study, actor=actor)
    assert record.status == Import.Status.FAILED
    assert "no MSH segment" in record.errors[0]["message"]
    assert record.errors[0]["where"].startswith("bad.hl7")
    assert not DataPoint.objects.exists() and not ItemDefinition.objects.exists()
    assert not FormDefinition.objects.exists() and not VisitDefinition.objects.exists()
    assert not SubjectVisit.objects.exists()


def test_fhir_observation_in_a_diagnostic_report_is_loaded(tmp_path, actor):
    subject = SubjectFactory(subject_id="S-9")
    report = {
        "resourceType": "DiagnosticReport", "id": "r1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "24323-8"}]},
        "subject": {"identifier": {"value": "S-9"}},
        "contained": [{
            "resourceType": "Observation", "id": "k", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
            "effectiveDateTime": "2025-03-01T08:00:00+01:00",
            "valueQuantity": {"value": 5.6, "unit": "mmol/L", "code": "mmol/L"},
            "referenceRange": [{"low": {"value": 3.5}, "high": {"value": 5.0}}],
            "interpretation": [{"coding": [{"code": "H"}]}],
        }],
        "result": [{"reference": "#k"}],
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    record = labs_import(paths=[path], study=subject.study, actor=actor)
    assert record.source == Import.Source.FHIR
    point = DataPoint.objects.get()
    assert (point.subject, point.value_number, point.units, point.normal_high, point.abnormal_flag) == (
        subject, 5.6, "mmol/L", 5.0, "H")


def test_the_command_prints_a_summary_and_fails_with_the_reason(tmp_path, capsys):
    subject = SubjectFactory(subject_id="P-001")
    path = tmp_path / "msg.hl7"
    path.write_text(LINE_ENDINGS_MESSAGE.format(patient="P-001"))
    call_command("import_labs", str(path), "--study", subject.study.protocol_id)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "succeeded" in out[0] and "lab_values=3" in out[0]

    bad = tmp_path / "bad.hl7"
    bad.write_text("OBX|1|NM|2823-3^Potassium^LN||4.0\n")
    with pytest.raises(CommandError, match="no MSH segment"):
        call_command("import_labs", str(bad), "--study", subject.study.oid)
    with pytest.raises(CommandError, match="No study"):
        call_command("import_labs", str(path), "--study", "NOPE")
