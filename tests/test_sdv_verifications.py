"""The CRA's side of source verification through the API: the verdict list (fields, filters,
scope), confirm and override (a reason required), manual SDV, raising a query; and the rule that a
later change of a verified value un-verifies it, audited, on every write path: the API, a file
import and an EDC sync. Documents here are PDFs with a text layer (read without OCR)."""

import pytest
from rest_framework.test import APIClient

from queries.models import Query
from sdv.models import SourceDocument, SourceVerification
from sdv.verification import samples
from sdv.verification.services import document_store, documents_read
from studies.models import DataPoint
from tests.sdv_helpers import PAGE_LINES, make_trial, upload_file

pytestmark = pytest.mark.django_db
LIST = "/api/v1/source-verifications/"
V = SourceVerification.Verdict


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def trial(media):
    trial = make_trial()
    pdf = samples.lab_report_pdf_text(PAGE_LINES, subject_id="101-004", visit="Week 4", collected="2025-03-04")
    response = api(trial.coordinator).post("/api/v1/source-documents/", {
        "study": trial.study.pk, "subject_id": "101-004", "visit_oid": "SE.WEEK4",
        "file": upload_file("report.pdf", pdf)}, format="multipart")
    trial.document = SourceDocument.objects.get(pk=response.json()["id"])
    from agents.identity import agent_user

    [read] = documents_read([trial.document])
    document_store(document=trial.document, read=read, actor=agent_user("DataVerification"), reason="test read")
    trial.by_item = {v.item.oid: v for v in SourceVerification.objects.filter(document=trial.document)}
    return trial


def test_the_verdicts_list_with_the_fields_of_the_contract(trial):
    response = api(trial.cra).get(LIST, {"study": trial.study.pk})
    assert response.status_code == 200
    rows = {r["item_oid"]: r for r in response.json()["results"]}
    assert set(rows) == {"LB.HGB", "LB.K", "I.CREAT", "LB.GLUC", "I.ALT", "VS.PULSE"}
    hgb = rows["LB.HGB"]
    assert {"id", "subject_id", "visit_oid", "item_oid", "verdict", "edc_value", "edc_unit", "source_value",
            "source_unit", "confidence", "document", "page", "bbox", "verified_by", "verified_at"} <= set(hgb)
    assert (hgb["subject_id"], hgb["visit_oid"], hgb["verdict"], hgb["edc_value"], hgb["edc_unit"],
            hgb["source_value"], hgb["source_unit"], hgb["confidence"], hgb["document"], hgb["page"],
            hgb["verified_by"], hgb["verified_at"], hgb["stale"]) == (
        "101-004", "SE.WEEK4", "verified", "135", "g/L", "13.5", "g/dL", 1.0, trial.document.pk, 1, None, None, False)
    assert len(hgb["bbox"]) == 4
    assert rows["LB.K"]["verdict"] == "discrepancy" and rows["VS.PULSE"]["verdict"] == "not_found"


@pytest.mark.parametrize("params, items", [
    ({"verdict": "discrepancy"}, {"LB.K"}), ({"item": "LB.GLUC"}, {"LB.GLUC"}),
    ({"subject": "101-004", "visit": "SE.WEEK4", "verdict": "not_found"}, {"VS.PULSE"}),
    ({"subject": "102-001"}, set()), ({"visit": "SE.OTHER"}, set())])
def test_the_verdicts_filter(trial, params, items):
    response = api(trial.cra).get(LIST, {"study": trial.study.pk, **params})
    assert {r["item_oid"] for r in response.json()["results"]} == items


def test_the_document_filter_and_bad_filters(trial):
    client = api(trial.cra)
    assert client.get(LIST, {"document": trial.document.pk}).json()["count"] == 6
    for bad in ({"study": "x"}, {"study": 2**70}, {"verdict": "maybe"}, {"document": "1.5"}):
        response = client.get(LIST, bad)
        assert response.status_code == 400 and set(response.json()) == {"message", "extra"}
    assert client.get(f"{LIST}{2**70}/").status_code == 404


def test_verdicts_are_read_by_sdv_readers_at_their_sites_only(trial):
    potassium = trial.by_item["LB.K"]
    # site staff do not learn what is verified at their site; another site's CRA sees nothing
    assert api(trial.coordinator).get(LIST).json()["count"] == 0
    assert api(trial.coordinator).get(f"{LIST}{potassium.pk}/").status_code == 404
    assert api(trial.data_manager).get(LIST).json()["count"] == 6
    from studies.models import Role
    from studies.services import cra_site_assign, membership_grant
    from tests.factories import UserFactory

    other_cra = UserFactory(username="cra.102")
    membership_grant(user=other_cra, study=trial.study, role=Role.CRA)
    cra_site_assign(cra=other_cra, site=trial.other_site)
    assert api(other_cra).get(LIST).json()["count"] == 0
    assert api(other_cra).post(f"{LIST}{potassium.pk}/confirm/", {}, format="json").status_code == 404


def test_the_cra_confirms_a_verdict_and_the_value_is_verified(trial):
    hgb = trial.by_item["LB.HGB"]
    response = api(trial.cra).post(f"{LIST}{hgb.pk}/confirm/", {}, format="json")
    assert response.status_code == 200
    assert (response.json()["verified_by"], response.json()["verdict"]) == ("cra.sdv", "verified")
    hgb.refresh_from_db()
    assert (hgb.review, hgb.verified_by, hgb.verdict) == ("confirmed", trial.cra, "verified")
    latest = hgb.history.first()
    assert (latest.history_user, latest.history_change_reason) == (trial.cra, "Confirmed by the CRA (verified)")
    point = DataPoint.objects.get(pk=trial.points["LB.HGB"].pk)
    assert point.sdv_state == DataPoint.SdvState.VERIFIED
    row = point.history.first()
    assert (row.history_user, row.sdv_state) == (trial.cra, "verified")
    assert row.history_change_reason == f"SDV verified against document {trial.document.pk}, page 1 " \
                                        f"(verification {hgb.pk})"


def test_an_override_needs_a_reason(trial):
    potassium = trial.by_item["LB.K"]
    client = api(trial.cra)
    refused = client.post(f"{LIST}{potassium.pk}/confirm/", {"verdict": "verified"}, format="json")
    assert refused.status_code == 400 and "needs a reason" in refused.json()["message"]
    potassium.refresh_from_db()
    assert (potassium.verdict, potassium.review, potassium.history.count()) == ("discrepancy", "", 2)  # read, query

    done = client.post(f"{LIST}{potassium.pk}/confirm/", {"verdict": "verified", "reason": "Lab re-issued the report "
                                                          "with 4.5; the page uploaded is the superseded one"},
                       format="json")
    assert done.status_code == 200
    potassium.refresh_from_db()
    assert (potassium.verdict, potassium.agent_verdict, potassium.review) == ("verified", "discrepancy", "overridden")
    assert potassium.history.first().history_change_reason.startswith(
        "Overridden by the CRA (discrepancy -> verified): Lab re-issued")
    assert client.post(f"{LIST}{potassium.pk}/confirm/", {"verdict": "needs_review"},
                       format="json").status_code == 400


def test_only_the_cra_of_the_site_confirms(trial):
    hgb = trial.by_item["LB.HGB"]
    assert api(trial.data_manager).post(f"{LIST}{hgb.pk}/confirm/", {}, format="json").status_code == 403
    hgb.refresh_from_db()
    assert hgb.review == "" and DataPoint.objects.get(pk=hgb.data_point_id).sdv_state == "to_verify"


def test_raising_a_query_from_a_verdict_reuses_the_agents_candidate(trial):
    potassium = trial.by_item["LB.K"]
    candidate = potassium.query
    assert candidate is not None and candidate.state == Query.State.CANDIDATE
    response = api(trial.cra).post(f"{LIST}{potassium.pk}/query/", format="json")
    assert response.status_code == 200 and response.json() == {"query": candidate.pk, "state": "candidate",
                                                                "created": False}
    # on a value with no active query, the CRA's query is raised Open, in the template's neutral words
    creatinine = trial.by_item["I.CREAT"]
    response = api(trial.cra).post(f"{LIST}{creatinine.pk}/query/", format="json")
    assert response.status_code == 201
    query = Query.objects.get(pk=response.json()["query"])
    assert (query.state, query.created_by, query.origin, query.data_point_id) == (
        Query.State.OPEN, trial.cra, Query.Origin.MANUAL, creatinine.data_point_id)
    assert "Creatinine" in query.text and "does not match the source document" in query.text
    creatinine.refresh_from_db()
    assert creatinine.query == query


def test_manual_sdv_against_paper_on_site(trial):
    pulse = trial.points["VS.PULSE"]
    response = api(trial.cra).post(f"{LIST}manual/", {"data_point": pulse.pk}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["method"], body["document"], body["verdict"], body["verified_by"]) == ("manual", None, "verified",
                                                                                       "cra.sdv")
    pulse.refresh_from_db()
    assert pulse.sdv_state == "verified"
    assert pulse.history.first().history_change_reason == "Manual SDV verified: Verified against the source on site"
    # again: the same row, a new history row
    api(trial.cra).post(f"{LIST}manual/", {"data_point": pulse.pk, "verdict": "discrepancy", "reason": "Paper says 76"},
                        format="json")
    assert SourceVerification.objects.filter(data_point=pulse, document=None).count() == 1
    assert SourceVerification.objects.get(data_point=pulse, document=None).history.count() == 2
    # another site's data point does not exist for this CRA; a bad id is a 400
    other = trial.other_points["VS.PULSE"]
    assert api(trial.cra).post(f"{LIST}manual/", {"data_point": other.pk}, format="json").status_code == 404
    assert api(trial.cra).post(f"{LIST}manual/", {"data_point": "x"}, format="json").status_code == 400


# --- A verified value that changes later is not verified any more -------------------------------------
def _verify(trial, oid="LB.HGB"):
    verification = trial.by_item[oid]
    assert api(trial.cra).post(f"{LIST}{verification.pk}/confirm/", {}, format="json").status_code == 200
    point = DataPoint.objects.get(pk=verification.data_point_id)
    assert point.sdv_state == "verified"
    return verification, point


def _assert_unverified(trial, verification, point, *, user, reason):
    point.refresh_from_db()
    assert point.sdv_state == DataPoint.SdvState.TO_VERIFY
    latest = point.history.first()
    assert (latest.sdv_state, latest.history_user, latest.history_change_reason) == ("to_verify", user, reason)
    assert point.history.all()[1].sdv_state == "verified"  # the audit trail shows it was verified before
    row = api(trial.cra).get(f"{LIST}{verification.pk}/").json()
    assert row["stale"] is True and row["current_edc_value"] == point.raw_value
    # the old verdict cannot be confirmed for the new value
    refused = api(trial.cra).post(f"{LIST}{verification.pk}/confirm/", {}, format="json")
    assert refused.status_code == 400 and "changed since this verdict" in refused.json()["message"]


def test_a_change_through_the_api_unverifies_the_value(trial):
    verification, point = _verify(trial)
    response = api(trial.coordinator).patch(f"/api/v1/data-points/{point.pk}/", {
        "raw_value": "136", "reason": "Transcription corrected"}, format="json")
    assert response.status_code == 200
    _assert_unverified(trial, verification, point, user=trial.coordinator, reason="Transcription corrected")


def test_matching_again_after_a_change_gives_a_fresh_verdict_for_the_cra(trial):
    from agents.identity import agent_user
    from sdv.verification.agent import documents_due

    verification, point = _verify(trial)
    api(trial.coordinator).patch(f"/api/v1/data-points/{point.pk}/", {"raw_value": "153", "reason": "Typo"},
                                 format="json")
    waiting, stale = documents_due(study_id=trial.study.pk)
    assert (waiting, stale) == ([], [trial.document])
    document_store(document=trial.document, read=None, actor=agent_user("DataVerification"), reason="matched again")
    verification.refresh_from_db()
    assert (verification.verdict, verification.review, verification.verified_by, verification.edc_value) == (
        "discrepancy", "", None, "153")
    assert documents_due(study_id=trial.study.pk) == ([], [])


ODM = """<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3.2" FileType="Snapshot" FileOID="F.{n}"
     CreationDateTime="2025-03-0{n}T10:00:00">
  <Study OID="S.ODMLAB">
    <GlobalVariables><StudyName>ODM lab</StudyName><StudyDescription>x</StudyDescription>
      <ProtocolName>ODM-LAB</ProtocolName></GlobalVariables>
    <MetaDataVersion OID="MDV.1" Name="v1">
      <Protocol><StudyEventRef StudyEventOID="SE.W4" OrderNumber="1" Mandatory="Yes"/></Protocol>
      <StudyEventDef OID="SE.W4" Name="Week 4" Repeating="No" Type="Scheduled"><FormRef FormOID="F.LB"
        Mandatory="Yes"/></StudyEventDef>
      <FormDef OID="F.LB" Name="Labs" Repeating="No"><ItemGroupRef ItemGroupOID="IG.LB" Mandatory="Yes"/></FormDef>
      <ItemGroupDef OID="IG.LB" Name="Labs" Repeating="No"><ItemRef ItemOID="I.A1" Mandatory="No"/></ItemGroupDef>
      <ItemDef OID="I.A1" Name="Lab 1" DataType="float"><Question><TranslatedText>Lab 1</TranslatedText></Question>
        <Alias Context="LBTESTCD" Name="HGB"/><Alias Context="LOINC" Name="718-7"/></ItemDef>
    </MetaDataVersion>
  </Study>
  <ClinicalData StudyOID="S.ODMLAB" MetaDataVersionOID="MDV.1">
    <SubjectData SubjectKey="1001"><SiteRef LocationOID="SITE-1"/>
      <StudyEventData StudyEventOID="SE.W4"><FormData FormOID="F.LB"><ItemGroupData ItemGroupOID="IG.LB">
        <ItemData ItemOID="I.A1" Value="{value}"/>
      </ItemGroupData></FormData></StudyEventData>
    </SubjectData>
  </ClinicalData>
</ODM>
"""


def test_an_import_that_changes_a_verified_value_unverifies_it(tmp_path):
    from sdv.verification.analytes import item_analyte_code
    from sdv.verification.services import data_point_verify_manually
    from studies.audit import system_account
    from studies.ingest.odm import odm_import
    from studies.models import ItemDefinition, Role, Site
    from studies.services import cra_site_assign, membership_grant
    from tests.factories import UserFactory

    importer = system_account("test.import")
    first = tmp_path / "one.xml"
    first.write_text(ODM.format(n=1, value="13.5"))
    odm_import(path=first, actor=importer)
    item = ItemDefinition.objects.get(oid="I.A1")
    # the item's Alias is its analyte code: the lab item maps to haemoglobin although its label says nothing
    assert (item.code, item_analyte_code(item)) == ("HGB", "HGB")
    point = DataPoint.objects.get(item=item)
    cra = UserFactory(username="cra.odm")
    membership_grant(user=cra, study=point.study, role=Role.CRA)
    cra_site_assign(cra=cra, site=Site.objects.get(study=point.study))
    verification = data_point_verify_manually(data_point=point, actor=cra)
    point.refresh_from_db()
    assert point.sdv_state == "verified"

    second = tmp_path / "two.xml"
    second.write_text(ODM.format(n=2, value="12.5"))
    record = odm_import(path=second, actor=importer)
    point.refresh_from_db()
    assert (point.raw_value, point.version, point.sdv_state) == ("12.5", 2, "to_verify")
    latest = point.history.first()
    assert (latest.sdv_state, latest.history_user) == ("to_verify", importer)
    assert str(record.pk) in latest.history_change_reason
    verification.refresh_from_db()
    assert verification.stale


def test_an_edc_sync_that_changes_a_verified_value_unverifies_it(settings):
    from sdv.verification.services import data_point_verify_manually
    from studies.edc.services import edc_sync
    from studies.models import EdcConnection, Role, Site
    from studies.services import cra_site_assign, membership_grant
    from tests.factories import StudyFactory, UserFactory
    from tests.fakes import serve
    from tests.fakes.redcap import FakeRedcap

    token = "0123456789ABCDEF0123456789ABCDEF"
    settings.EDC_SECRETS = {"TRIALOPS_EDC_SDV_TOKEN": token}
    fake = FakeRedcap(token=token)
    with serve(fake) as url:
        connection = EdcConnection.objects.create(study=StudyFactory(), vendor=EdcConnection.Vendor.REDCAP,
                                                  base_url=f"{url}/api/", credentials_env="TRIALOPS_EDC_SDV")
        edc_sync(connection=connection)
        point = DataPoint.objects.get(subject__subject_id="1", item__oid="weight")
        cra = UserFactory(username="cra.redcap")
        membership_grant(user=cra, study=connection.study, role=Role.CRA)
        cra_site_assign(cra=cra, site=Site.objects.get(study=connection.study, number="paris"))
        verification = data_point_verify_manually(data_point=point, actor=cra)
        fake.records[0].update(weight="72.5", _modified="2999-01-01 00:00:00")  # changed after the last sync
        [record] = edc_sync(connection=connection)
    point.refresh_from_db()
    assert (point.raw_value, point.sdv_state) == ("72.5", "to_verify")
    latest = point.history.first()
    assert latest.sdv_state == "to_verify" and str(record.pk) in latest.history_change_reason
    assert point.history.all()[1].sdv_state == "verified"
    verification.refresh_from_db()
    assert verification.stale


def test_a_reading_settled_by_the_edc_of_its_day_is_only_for_review_after_the_edc_changes(trial):
    """A doubtful value that matched the EDC when read was not read a second time (settled): once
    the EDC value changes, that single reading cannot raise a query, however confident it was."""
    from agents.identity import agent_user
    from studies.audit import set_audit

    page = trial.document.pages.get()
    rows = [dict(r, settled=True) if r["name"] == "Potassium" or r["value"] == "5.4" else r for r in page.rows]
    assert rows != page.rows
    page.rows = rows
    set_audit(page, actor=agent_user("DataVerification"), reason="test: a settled reading")
    page.save()
    point = trial.points["LB.K"]
    queries = Query.objects.filter(data_point=point).count()
    api(trial.coordinator).patch(f"/api/v1/data-points/{point.pk}/", {"raw_value": "5.9", "reason": "Typo"},
                                 format="json")

    document_store(document=trial.document, read=None, actor=agent_user("DataVerification"), reason="matched again")

    verification = SourceVerification.objects.get(document=trial.document, item__oid="LB.K")
    assert (verification.verdict, verification.edc_value, verification.source_value) == ("needs_review", "5.9", "5.4")
    assert Query.objects.filter(data_point=point).count() == queries  # no new query from an unconfirmed reading
    assert verification.history.latest().history_change_reason == "matched again"
