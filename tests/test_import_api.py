"""Uploading a file through the API or the UI: stored, imported in the background by a real
worker, listed with status and counts; permission-checked and scoped like every endpoint."""

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from studies.models import DataPoint, Import, Role, Subject
from studies.services import membership_grant
from tests.factories import SiteFactory, StudyFactory, UserFactory

ODM = b"""<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3.2" FileType="Snapshot" FileOID="F.1"
     CreationDateTime="2025-03-01T10:00:00">
  <Study OID="S.UPLOAD">
    <GlobalVariables><StudyName>Upload study</StudyName><StudyDescription>x</StudyDescription>
      <ProtocolName>UPLOAD-1</ProtocolName></GlobalVariables>
    <MetaDataVersion OID="MDV.1" Name="v1">
      <Protocol><StudyEventRef StudyEventOID="SE.BL" OrderNumber="1" Mandatory="Yes"/></Protocol>
      <StudyEventDef OID="SE.BL" Name="Baseline" Repeating="No" Type="Scheduled">
        <FormRef FormOID="F.VS" Mandatory="Yes"/></StudyEventDef>
      <FormDef OID="F.VS" Name="Vital signs" Repeating="No">
        <ItemGroupRef ItemGroupOID="IG.VS" Mandatory="Yes"/></FormDef>
      <ItemGroupDef OID="IG.VS" Name="Vitals" Repeating="No">
        <ItemRef ItemOID="I.SYSBP" Mandatory="Yes"/><ItemRef ItemOID="I.DIABP" Mandatory="No"/></ItemGroupDef>
      <ItemDef OID="I.SYSBP" Name="Systolic BP" DataType="integer"/>
      <ItemDef OID="I.DIABP" Name="Diastolic BP" DataType="integer"/>
    </MetaDataVersion>
  </Study>
  <ClinicalData StudyOID="S.UPLOAD" MetaDataVersionOID="MDV.1">
    <SubjectData SubjectKey="1001"><SiteRef LocationOID="SITE-1"/>
      <StudyEventData StudyEventOID="SE.BL"><FormData FormOID="F.VS"><ItemGroupData ItemGroupOID="IG.VS">
        <ItemData ItemOID="I.SYSBP" Value="128"/><ItemData ItemOID="I.DIABP" Value="82"/>
      </ItemGroupData></FormData></StudyEventData>
    </SubjectData>
  </ClinicalData>
</ODM>
"""


@pytest.fixture
def study(db):
    study = StudyFactory(protocol_id="UPLOAD-1", oid="S.UPLOAD", name="Upload study")
    SiteFactory(study=study, number="SITE-1")
    return study


def member(study, username: str, role: str) -> APIClient:
    user = UserFactory(username=username)
    site = study.sites.first() if role in (Role.SITE_COORDINATOR, Role.INVESTIGATOR) else None
    membership_grant(user=user, study=study, role=role, site=site)
    client = APIClient()
    client.force_authenticate(user)
    return client


def upload(client, study, content: bytes = ODM, name: str = "export.xml"):
    return client.post(f"/api/v1/studies/{study.pk}/imports/",
                       {"file": SimpleUploadedFile(name, content)}, format="multipart")


def wait_finished(import_id: int, timeout: float = 30) -> Import:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = Import.objects.get(pk=import_id)
        if record.status in (Import.Status.SUCCEEDED, Import.Status.FAILED):
            return record
        time.sleep(0.1)
    raise AssertionError(f"import {import_id} still {record.status} after {timeout}s")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_data_manager_uploads_and_a_worker_imports_it(study, worker):
    client = member(study, "dm_up", Role.DATA_MANAGER)
    response = upload(client, study)

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["source"], body["filename"], body["created_by"]) == (
        "pending", "odm", "export.xml", "dm_up")
    assert "stored_as" not in body["counts"]

    record = wait_finished(body["id"])
    assert record.status == Import.Status.SUCCEEDED, record.errors
    assert record.counts["data_points_created"] == 2
    assert set(DataPoint.objects.filter(study=study).values_list("raw_value", flat=True)) == {"128", "82"}
    assert Subject.objects.get(study=study).subject_id == "1001"

    listed = client.get("/api/v1/imports/", {"study": study.pk}).json()
    assert [row["id"] for row in listed["results"]] == [record.pk]
    assert listed["results"][0]["counts"]["data_points_created"] == 2
    assert listed["results"][0]["duration_seconds"] >= 0


@pytest.mark.django_db
def test_an_unrecognised_file_is_refused_and_nothing_is_stored(study):
    response = upload(member(study, "dm_bad", Role.DATA_MANAGER), study, b"name,value\nx,1\n", "data.csv")
    assert response.status_code == 400
    assert response.json()["message"].startswith("file: Unrecognised file")
    assert not Import.objects.exists()


@pytest.mark.django_db
def test_a_file_over_the_limit_is_refused(study, settings):
    settings.IMPORT_MAX_BYTES = 100
    response = upload(member(study, "dm_big", Role.DATA_MANAGER), study)
    assert response.status_code == 400
    assert "over the limit" in response.json()["message"]
    assert not Import.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.SITE_COORDINATOR, Role.CRA, Role.MEDICAL_MONITOR, Role.AUDITOR])
def test_other_roles_may_not_import(study, role):
    response = upload(member(study, f"user_{role}", role), study)
    assert response.status_code == 403
    assert not Import.objects.exists()


@pytest.mark.django_db
def test_a_user_outside_the_study_gets_404(study):
    other = StudyFactory()
    client = member(other, "dm_other", Role.DATA_MANAGER)
    assert upload(client, study).status_code == 404
    assert not Import.objects.exists()


@pytest.mark.django_db
def test_site_staff_do_not_see_imports(study):
    Import.objects.create(study=study, source=Import.Source.ODM, filename="x.xml")
    assert member(study, "sc", Role.SITE_COORDINATOR).get("/api/v1/imports/").json()["count"] == 0
    assert member(study, "aud", Role.AUDITOR).get("/api/v1/imports/").json()["count"] == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_upload_page_imports_and_shows_live_status(study, worker, client):
    user = UserFactory(username="dm_page")
    membership_grant(user=user, study=study, role=Role.DATA_MANAGER)
    client.force_login(user)
    page = client.get(f"/studies/{study.pk}/imports/")
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.content.decode()

    posted = client.post(f"/studies/{study.pk}/imports/", {"file": SimpleUploadedFile("v.xml", ODM)})
    assert posted.status_code == 302
    record = Import.objects.get()
    assert posted["Location"] == f"/imports/{record.pk}/"
    wait_finished(record.pk)

    partial = client.get(f"/imports/{record.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "Succeeded" in partial and "data_points_created" in partial
    assert "hx-trigger" not in partial  # polling stops once the import has finished


@pytest.mark.django_db
def test_site_staff_get_403_on_the_import_page_and_no_upload_form(study, client):
    user = UserFactory(username="sc_page")
    membership_grant(user=user, study=study, role=Role.SITE_COORDINATOR, site=study.sites.first())
    client.force_login(user)
    assert client.get(f"/studies/{study.pk}/imports/").status_code == 403
    assert "Imports" not in client.get(f"/studies/{study.pk}/").content.decode()


@pytest.mark.django_db
def test_an_import_whose_worker_died_is_marked_failed(study, settings):
    from datetime import timedelta

    from django.utils import timezone

    from studies.ingest.tasks import imports_fail_stale

    old = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
    dead = Import.objects.create(study=study, source=Import.Source.ODM, status=Import.Status.RUNNING, started_at=old)
    alive = Import.objects.create(study=study, source=Import.Source.ODM, status=Import.Status.RUNNING,
                                  started_at=timezone.now())
    assert imports_fail_stale() == 1
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == Import.Status.FAILED and "stopped before it finished" in dead.errors[0]["message"]
    assert alive.status == Import.Status.RUNNING


@pytest.mark.django_db
def test_an_upload_whose_stored_file_is_gone_fails_instead_of_hanging(study):
    from studies.ingest.tasks import import_run_file

    record = Import.objects.create(study=study, source=Import.Source.ODM, counts={"stored_as": "missing.upload"})
    with pytest.raises(FileNotFoundError):
        import_run_file.run(record.pk)  # the task's body, as a worker runs it
    record.refresh_from_db()
    assert record.status == Import.Status.FAILED
    assert record.counts.get("stored_as") == "missing.upload"
