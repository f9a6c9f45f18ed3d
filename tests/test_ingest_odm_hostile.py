"""Hostile and broken ODM files: each is refused with a clear message, and nothing is stored but the
failed Import record that says what and where."""

import pytest

from queries.models import Query
from studies.ingest.odm import odm_import
from studies.models import DataPoint, Import, Site, SourceAuditRecord, Study, Subject
from tests.factories import UserFactory
from tests.test_ingest_odm import ODM_NS, subject_xml, write_odm

HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
ROOT = (f'<ODM xmlns="{ODM_NS}" ODMVersion="1.3.2" FileType="Snapshot" FileOID="X" '
        'CreationDateTime="2025-01-01T00:00:00">')


@pytest.fixture
def actor(db):
    return UserFactory(username="odm.importer")


def refused(path, actor) -> dict:
    record = odm_import(path=path, actor=actor)
    assert record.status == Import.Status.FAILED
    assert record.finished_at is not None and record.counts == {}
    assert Import.objects.count() == 1
    assert (Study.objects.count(), Study.history.count(), Site.objects.count(), Subject.objects.count(),
            DataPoint.objects.count(), SourceAuditRecord.objects.count(), Query.objects.count()) == (0,) * 7
    return record.errors[0]


def test_malformed_xml_is_refused_with_line_and_column(tmp_path, actor):
    path = tmp_path / "bad.xml"
    path.write_text(HEAD + ROOT + '\n<Study OID="S">\n<GlobalVariables>\n</Study></ODM>')
    error = refused(path, actor)
    assert error["message"].startswith("Malformed XML")
    assert error["where"] == "line 5, column 9"  # the </Study> that does not close <GlobalVariables>


def test_xxe_is_refused(tmp_path, actor):
    path = tmp_path / "xxe.xml"
    path.write_text(HEAD + '<!DOCTYPE ODM [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n' + ROOT +
                    '<ClinicalData StudyOID="&xxe;"/></ODM>')
    error = refused(path, actor)
    assert "DOCTYPE" in error["message"] and "refused" in error["message"]
    assert error["where"] == "line 2"


def test_billion_laughs_is_refused(tmp_path, actor):
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10 if n > 1 else "&lol;" * 10}">' for n in range(1, 10))
    path = tmp_path / "laughs.xml"
    path.write_text(HEAD + f"<!DOCTYPE lolz [{entities}]>\n" + ROOT + "<Study OID='&lol9;'/></ODM>")
    error = refused(path, actor)
    assert "DOCTYPE" in error["message"]


def test_an_external_dtd_is_refused_and_never_fetched(tmp_path, actor):
    path = tmp_path / "dtd.xml"
    path.write_text(HEAD + '<!DOCTYPE ODM SYSTEM "http://127.0.0.1:9/evil.dtd">\n' + ROOT + "</ODM>")
    error = refused(path, actor)
    assert "DOCTYPE (DTD)" in error["message"]


def test_an_entity_declaration_without_doctype_is_refused(tmp_path, actor):
    path = tmp_path / "entity.xml"
    path.write_text(HEAD + ROOT + '<!ENTITY x "y"></ODM>')
    error = refused(path, actor)
    assert "ENTITY" in error["message"]


@pytest.mark.parametrize("version", ["2.0", "1.2", ""])
def test_a_wrong_odm_version_is_refused(tmp_path, actor, version):
    error = refused(write_odm(tmp_path / "v.xml", subject_xml("001"), version=version), actor)
    assert "is not supported: expected 1.3.x" in error["message"]
    assert "ODMVersion" in error["where"]


def test_a_file_that_is_not_odm_is_refused(tmp_path, actor):
    path = tmp_path / "other.xml"
    path.write_text(HEAD + "<define><x/></define>")
    assert "Not a CDISC ODM file" in refused(path, actor)["message"]


def test_an_odm_2_namespace_is_refused(tmp_path, actor):
    path = tmp_path / "odm2.xml"
    path.write_text(HEAD + '<ODM xmlns="http://www.cdisc.org/ns/odm/v2.0" ODMVersion="2.0"/>')
    assert "Unsupported ODM namespace" in refused(path, actor)["message"]


def test_an_unknown_oid_is_refused_with_where(tmp_path, actor):
    error = refused(write_odm(tmp_path / "oid.xml", subject_xml("001") + subject_xml("002", weight_oid="I.NOPE")),
                    actor)
    assert error["message"].startswith("Unknown ItemOID 'I.NOPE'")
    assert error["where"].startswith("line ") and error["where"].endswith("SubjectData 002")


def test_clinical_data_of_an_unknown_study_is_refused(tmp_path, actor):
    error = refused(write_odm(tmp_path / "cd.xml", subject_xml("001"), metadata=False), actor)
    assert "Unknown study OID 'S.T'" in error["message"]


def test_text_that_is_not_utf8_is_refused(tmp_path, actor):
    path = tmp_path / "latin1.xml"
    path.write_bytes((HEAD + ROOT + '<Study OID="S"><GlobalVariables><StudyName>Jos').encode() +
                     b"\xe9" + b"</StudyName></GlobalVariables></Study></ODM>")
    error = refused(path, actor)
    assert error["message"].startswith("The file is not valid UTF-8 text")
    assert error["where"].startswith("line 2, column")


@pytest.mark.parametrize("declared, encoding", [("ISO-8859-1", "latin-1"), ("UTF-16", "utf-16")])
def test_other_encodings_are_refused(tmp_path, actor, declared, encoding):
    path = tmp_path / "enc.xml"
    path.write_bytes(f'<?xml version="1.0" encoding="{declared}"?>\n{ROOT}</ODM>'.encode(encoding))
    assert "only UTF-8 XML is accepted" in refused(path, actor)["message"]


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path, actor, settings):
    settings.IMPORT_MAX_BYTES = 2048
    path = write_odm(tmp_path / "big.xml", subject_xml("001"))
    error = refused(path, actor)
    assert "over the limit of 2,048" in error["message"]
