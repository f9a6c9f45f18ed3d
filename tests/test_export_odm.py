"""ODM export: the file re-imports, into a fresh study, to the same subjects, visits, values and queries."""

import io

import pytest
from django.core.management import call_command
from lxml import etree

from queries.models import Query, QueryMessage
from studies.audit import set_audit
from studies.ingest.odm import odm_import
from studies.ingest.odm_export import odm_export
from studies.models import DataPoint, Import, Study, Subject, SubjectVisit
from studies.services import data_point_update
from tests.factories import StudyFactory, UserFactory
from tests.test_ingest_odm import JUNO, subject_xml, write_odm


@pytest.fixture
def actor(db):
    return UserFactory(username="odm.importer")


def snapshot(study: Study) -> dict:
    """What must survive a round trip, keyed by natural keys (never by database ids)."""
    return {
        "subjects": sorted(Subject.objects.filter(study=study).values_list("subject_id", "site__number")),
        "visits": sorted(SubjectVisit.objects.filter(study=study).values_list(
            "subject__subject_id", "definition__oid", "repeat_key", "actual_date")),
        "data_points": sorted(DataPoint.objects.filter(study=study).values_list(
            "subject__subject_id", "visit__definition__oid", "visit__repeat_key", "form__oid", "item__oid",
            "repeat_key", "raw_value")),
        "queries": sorted(
            (q.subject.subject_id, q.data_point.item.oid if q.data_point else None,
             q.data_point.repeat_key if q.data_point else None, q.state, q.text,
             tuple((m.kind, m.text) for m in q.messages.all()))
            for q in Query.objects.filter(study=study).select_related("subject", "data_point__item")),
    }


def round_trip(study: Study, actor, tmp_path) -> Study:
    out = tmp_path / "export.xml"
    odm_export(study=study, out=out)
    fresh = StudyFactory(protocol_id="FRESH-1", oid=None)
    record = odm_import(path=out, actor=actor, study=fresh)
    assert record.status == Import.Status.SUCCEEDED, record.errors
    return fresh


def test_an_export_reimports_to_the_same_data_and_queries(tmp_path, actor):
    record = odm_import(path=write_odm(tmp_path / "t.xml", subject_xml("001") + subject_xml("002", meds=("X",))),
                        actor=actor)
    study = record.study
    weight = DataPoint.objects.get(subject__subject_id="001", item__oid="I.WEIGHT")
    data_point_update(data_point=weight, raw_value="71", actor=actor, reason="Transcription error")
    query = Query(study=study, site=weight.subject.site, subject=weight.subject, data_point=weight,
                  origin=Query.Origin.MANUAL, state=Query.State.ANSWERED, text="Please verify the weight.")
    set_audit(query, actor=actor, reason="raised").save()
    for kind, text in (("question", "Please verify the weight."), ("answer", "Corrected from source.")):
        set_audit(QueryMessage(query=query, kind=kind, text=text), actor=actor, reason="thread").save()

    fresh = round_trip(study, actor, tmp_path)

    assert snapshot(fresh) == snapshot(study)
    assert DataPoint.objects.get(study=fresh, subject__subject_id="001", item__oid="I.WEIGHT").raw_value == "71"
    assert len(snapshot(fresh)["queries"]) == 1


def test_the_export_is_odm_132_with_the_trail_and_the_query_extension(tmp_path, actor):
    study = odm_import(path=write_odm(tmp_path / "t.xml", subject_xml("001")), actor=actor).study
    buffer = io.BytesIO()

    counts = odm_export(study=study, out=buffer)

    root = etree.fromstring(buffer.getvalue())
    ns = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "t": "https://trialops.example/ns/odm-query/v1"}
    assert root.get("ODMVersion") == "1.3.2"
    assert counts == {"items": 4, "subjects": 1, "data_points": 5, "audit_records": 6, "queries": 0}
    weight = root.find(".//odm:ItemData[@ItemOID='I.WEIGHT']", ns)
    assert len(weight.findall("odm:AuditRecord", ns)) == 1  # ODM 1.3.2 allows one; the trail is the extension
    trail = weight.findall("t:AuditTrail/odm:AuditRecord", ns)
    assert [r.findtext("odm:ReasonForChange", namespaces=ns) for r in trail] == [
        "initial entry", f"EDC sync {Import.objects.get().pk}"]


def test_the_command_writes_the_file_and_prints_a_summary(tmp_path, actor, capsys):
    odm_import(path=write_odm(tmp_path / "t.xml", subject_xml("001")), actor=actor)
    out = tmp_path / "out.xml"

    call_command("export_odm", "--study", "T-001", str(out))

    line = capsys.readouterr().out.strip()
    assert line.startswith("Exported T-001 to") and "data_points=5" in line and len(line.splitlines()) == 1
    assert etree.parse(str(out)).getroot().get("ODMVersion") == "1.3.2"


@pytest.mark.shared_data
def test_the_juno_study_survives_a_round_trip_with_its_query_threads(shared_data, tmp_path, actor):
    study = odm_import(path=shared_data / "odm" / JUNO, actor=actor).study

    fresh = round_trip(study, actor, tmp_path)

    assert snapshot(fresh) == snapshot(study)
    assert len(snapshot(fresh)["queries"]) == 23 and len(snapshot(fresh)["data_points"]) == 3908
