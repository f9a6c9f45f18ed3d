"""The deviations API: the fields and filters of the log, site scope (another site's deviation is a
404), who may report, review, code and sign (every role), the ICH E3 listing read back from its PDF
and Excel files, the DV file, and bad input answered 400 with nothing stored."""

import io

import pytest
from openpyxl import load_workbook
from rest_framework.test import APIClient

from deviations.models import Deviation
from deviations.reporting import compliance_report_create
from studies.models import Role
from tests.scoping import build_world

pytestmark = pytest.mark.django_db
FIELDS = {"id", "subject_id", "site_number", "category", "importance", "dvcat", "dvdecod", "dvterm", "status",
          "source", "occurred_on", "visit", "description", "evidence"}


@pytest.fixture
def world():
    return build_world()


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_log_has_the_fields_of_the_issue_and_its_filters(world):
    study = world.studies["A"]
    client = client_for(world.users[Role.DATA_MANAGER])
    answer = client.get("/api/v1/deviations/", {"study": study.pk})
    assert answer.status_code == 200
    rows = answer.json()["results"]
    assert len(rows) == 2 and FIELDS <= set(rows[0])
    a1 = world.sites["A1"]
    row = next(r for r in rows if r["id"] == a1.deviation.pk)
    assert (row["subject_id"], row["site_number"], row["category"], row["source"]) == (
        "SUBJ-A1", a1.site.number, "visit_window", "manual")
    for params, expected in (({"site": a1.site.pk}, {a1.deviation.pk}), ({"subject_id": "SUBJ-A2"},
                             {world.sites["A2"].deviation.pk}), ({"category": "eligibility"}, set()),
                             ({"status": "open", "source": "manual", "importance": "non_important"},
                              {a1.deviation.pk, world.sites["A2"].deviation.pk})):
        got = client.get("/api/v1/deviations/", {"study": study.pk, **params}).json()["results"]
        assert {r["id"] for r in got} == expected, params


@pytest.mark.parametrize("role", list(Role))
def test_each_role_reads_only_its_sites_deviations(world, role):
    answer = client_for(world.users[role]).get("/api/v1/deviations/", {"study": world.studies["A"].pk})
    seen = {r["site_number"] for r in answer.json()["results"]}
    expected = {"A-101", "A-202"} if role not in (Role.CRA, Role.SITE_COORDINATOR, Role.INVESTIGATOR) else {"A-101"}
    assert seen == expected
    other = client_for(world.users[role]).get(f"/api/v1/deviations/{world.sites['B1'].deviation.pk}/")
    assert other.status_code == 404


REPORTERS = {Role.SITE_COORDINATOR, Role.INVESTIGATOR, Role.CRA}
REVIEWERS = {Role.DATA_MANAGER, Role.MEDICAL_MONITOR}


@pytest.mark.parametrize("role", list(Role))
def test_site_staff_and_cras_report_deviations_nobody_else(world, role):
    subject = world.sites["A1"].subject
    answer = client_for(world.users[role]).post("/api/v1/deviations/", {
        "subject": subject.pk, "category": "prohibited_medication", "occurred_on": "2025-01-20",
        "description": "Ibuprofen taken for 3 days (NSAIDs prohibited)"}, format="json")
    stored = Deviation.objects.filter(subject=subject, category="prohibited_medication")
    if role in REPORTERS:
        assert answer.status_code == 201, answer.json()
        deviation = stored.get()
        assert (deviation.source, deviation.reported_by, deviation.importance) == (
            "manual", world.users[role], "important")  # ICH E3: prohibited medication is important
        assert deviation.dvdecod == "MEDICATION, EXCLUDED BY THE PROTOCOL, WAS ADMINISTERED"
        assert answer.json()["dvcat"] == "EXCLUDED MEDICATION, VACCINE OR DEVICE"
        assert deviation.history.get().history_user == world.users[role]
    else:
        assert answer.status_code == 403 and not stored.exists()


@pytest.mark.parametrize("role", list(Role))
def test_data_managers_and_medical_monitors_review_and_code_with_a_reason(world, role):
    deviation = world.sites["A1"].deviation
    client = client_for(world.users[role])
    review = client.post(f"/api/v1/deviations/{deviation.pk}/review/", {"reason": "Checking with the site"},
                         format="json")
    recode = client.post(f"/api/v1/deviations/{deviation.pk}/recode/", {
        "reason": "Efficacy assessment", "dvdecod": "OUT OF WINDOW - EFFICACY ASSESSMENT",
        "importance": "important"}, format="json")
    deviation.refresh_from_db()
    if role in REVIEWERS:
        assert review.status_code == recode.status_code == 200
        assert (deviation.status, deviation.dvdecod, deviation.importance) == (
            "under_review", "OUT OF WINDOW - EFFICACY ASSESSMENT", "important")
        reasons = list(deviation.history.order_by("history_date").values_list("history_change_reason", flat=True))
        assert reasons[-2:] == ["Checking with the site", "Efficacy assessment"]
        closed = client.post(f"/api/v1/deviations/{deviation.pk}/close/", {"reason": "Confirmed at the visit"},
                             format="json")
        assert closed.status_code == 200 and closed.json()["resolution"] == "confirmed"
        assert closed.json()["history"][-1]["reason"] == "Confirmed at the visit"
    else:
        assert review.status_code == recode.status_code == 403
        assert (deviation.status, deviation.dvdecod) == ("open", "")


def test_bad_input_is_a_400_and_changes_nothing(world):
    deviation = world.sites["A1"].deviation
    dm = client_for(world.users[Role.DATA_MANAGER])
    cra = client_for(world.users[Role.CRA])
    for client, url, body in (
            (dm, f"/api/v1/deviations/{deviation.pk}/close/", {}),
            (dm, f"/api/v1/deviations/{deviation.pk}/recode/", {"reason": "x", "dvdecod": "NOT A TERM"}),
            (dm, f"/api/v1/deviations/{deviation.pk}/reopen/", {"reason": "x"}),
            (cra, "/api/v1/deviations/", {"subject": world.sites["A1"].subject.pk, "category": "nope",
                                          "description": "x"}),
            (cra, "/api/v1/deviations/", {"subject": world.sites["B1"].subject.pk, "category": "other",
                                          "description": "another study's subject"}),
            (cra, "/api/v1/deviations/", {"subject": 2**70, "category": "other", "description": "x"}),
            (dm, "/api/v1/deviations/bulk/", {"transition": "review", "reason": "x",
                                              "ids": [deviation.pk, world.sites["B1"].deviation.pk]})):
        answer = client.post(url, body, format="json")
        assert answer.status_code == 400, (url, answer.json())
        assert set(answer.json()) == {"message", "extra"}
    deviation.refresh_from_db()
    assert deviation.status == "open" and deviation.history.count() == 1
    assert Deviation.objects.count() == 4


def test_bulk_review_is_all_or_nothing(world):
    dm = client_for(world.users[Role.DATA_MANAGER])
    a1, a2 = world.sites["A1"].deviation, world.sites["A2"].deviation
    dm.post(f"/api/v1/deviations/{a2.pk}/close/", {"reason": "done"}, format="json")
    refused = dm.post("/api/v1/deviations/bulk/", {"transition": "review", "reason": "batch", "ids": [a1.pk, a2.pk]},
                      format="json")
    assert refused.status_code == 400
    a1.refresh_from_db()
    assert a1.status == "open"
    done = dm.post("/api/v1/deviations/bulk/", {"transition": "close", "reason": "batch", "ids": [a1.pk]},
                   format="json")
    assert done.status_code == 200 and done.json()[0]["status"] == "closed"


def test_the_listing_as_pdf_and_excel_holds_the_deviations_you_see(world):
    study = world.studies["A"]
    site_staff = client_for(world.users[Role.SITE_COORDINATOR])
    pdf = site_staff.get("/api/v1/deviations/listing-pdf/", {"study": study.pk})
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"
    xlsx = site_staff.get("/api/v1/deviations/listing-xlsx/", {"study": study.pk})
    sheet = load_workbook(io.BytesIO(xlsx.content))["Listing"]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:4] == ("Site", "Subject", "Category", "Importance")
    assert [r[:2] for r in rows[1:]] == [("A-101", "SUBJ-A1")]  # not site A2's
    assert rows[1][8] == "Deviation at A1"
    assert site_staff.get("/api/v1/deviations/sdtm-dv/", {"study": study.pk}).status_code == 403
    dv = client_for(world.users[Role.AUDITOR]).get("/api/v1/deviations/sdtm-dv/", {"study": study.pk})
    assert dv.status_code == 200 and dv.content.startswith(b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!")
    assert site_staff.get("/api/v1/deviations/listing-pdf/", {"study": world.studies["B"].pk}).status_code == 404
    assert site_staff.get("/api/v1/deviations/listing-pdf/", {"study": "x"}).status_code == 400


@pytest.mark.parametrize("role", list(Role))
def test_data_managers_and_sponsors_sign_the_periodic_report_with_their_password(world, role):
    import datetime  # noqa: PLC0415

    study = world.studies["A"]
    report, _ = compliance_report_create(study=study, actor=world.users[Role.SPONSOR],
                                         period_start=datetime.date(2025, 1, 1), period_end=datetime.date(2030, 1, 1))
    client = client_for(world.users[role])
    listed = client.get("/api/v1/compliance-reports/", {"study": study.pk})
    if role in (Role.SITE_COORDINATOR, Role.INVESTIGATOR, Role.CRA):
        assert listed.json()["results"] == []
        assert client.post(f"/api/v1/compliance-reports/{report.pk}/sign/", {}).status_code == 404
        return
    wrong = client.post(f"/api/v1/compliance-reports/{report.pk}/sign/", {"password": "nope", "meaning": "approved"},
                        format="json")
    signed = client.post(f"/api/v1/compliance-reports/{report.pk}/sign/",
                         {"password": "pw-for-tests", "meaning": "approved"}, format="json")
    report.refresh_from_db()
    if role in (Role.DATA_MANAGER, Role.SPONSOR):
        assert wrong.status_code == 400 and signed.status_code == 200
        assert report.is_signed and report.signed_by == world.users[role] and report.signature_meaning == "approved"
        assert report.history.latest("history_date").history_change_reason == "Signed (approved)"
    else:
        assert signed.status_code == 403 and not report.signed_at


@pytest.mark.django_db(transaction=True)
def test_a_report_whose_audit_row_cannot_be_written_stores_nothing(monkeypatch):
    """Atomic: the deviation and its history row, or neither (the audit write fails here)."""
    from simple_history.models import HistoricalRecords  # noqa: PLC0415

    world = build_world()
    a1 = world.sites["A1"]
    before = Deviation.objects.count()

    def refuse(*args, **kwargs):
        raise RuntimeError("audit table unavailable")

    monkeypatch.setattr(HistoricalRecords, "create_historical_record", refuse)
    client = client_for(world.users[Role.CRA])
    client.raise_request_exception = False
    answer = client.post("/api/v1/deviations/", {"subject": a1.subject.pk, "category": "informed_consent",
                                                 "description": "Consent form version 2 used"}, format="json")
    assert answer.status_code == 500
    assert Deviation.objects.count() == before
    assert not Deviation.objects.filter(description="Consent form version 2 used").exists()
