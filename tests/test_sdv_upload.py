"""Uploading source documents: every accepted type, every refusal with nothing stored (no row,
no file), one document for the same file at the same visit, audit rows, and the file served only
to users who may see the subject."""

import io
import zlib

import pytest
from rest_framework.test import APIClient

from sdv.models import SourceDocument
from sdv.verification import samples
from tests.sdv_helpers import PAGE_LINES, make_trial, page_png, stored_files, upload_file

pytestmark = pytest.mark.django_db
URL = "/api/v1/source-documents/"


@pytest.fixture
def trial():
    return make_trial()


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def post(client, trial, name, content, *, subject_id="101-004", visit_oid="SE.WEEK4"):
    return client.post(URL, {"study": trial.study.pk, "subject_id": subject_id, "visit_oid": visit_oid,
                             "file": upload_file(name, content)}, format="multipart")


def _image(kind: str) -> bytes:
    image = samples.lab_report_image(PAGE_LINES[:2], subject_id="101-004", visit="Week 4", collected="2025-03-04",
                                     dpi=72)
    if kind == "tiff":
        return samples.tiff_pages([image, image, image], dpi=72)
    if kind == "pdf-image":
        return samples.images_pdf([image, image], dpi=72)
    if kind == "pdf-text":
        return samples.lab_report_pdf_text(PAGE_LINES, subject_id="101-004", visit="Week 4", collected="2025-03-04")
    return samples.image_bytes(image, kind, dpi=72)


@pytest.mark.parametrize("kind, name, content_type, pages", [
    ("png", "scan.bin", "image/png", 1), ("jpeg", "scan.pdf", "image/jpeg", 1), ("tiff", "fax.tif", "image/tiff", 3),
    ("pdf-image", "scan.pdf", "application/pdf", 2), ("pdf-text", "report.pdf", "application/pdf", 1)])
def test_each_type_is_accepted_from_its_content_not_its_name(trial, media, kind, name, content_type, pages):
    content = _image(kind)
    response = post(client_for(trial.coordinator), trial, name, content)
    assert response.status_code == 201, response.json()
    document = SourceDocument.objects.get(pk=response.json()["id"])
    assert (document.content_type, document.page_count, document.status) == (content_type, pages, "uploaded")
    assert (document.subject, document.visit, document.site) == (trial.subject, trial.visit, trial.site)
    assert response.json()["status"] == "uploaded"
    # stored once, under its content hash, outside the static files
    import hashlib

    sha = hashlib.sha256(content).hexdigest()
    assert document.sha256 == sha and document.file_size == len(content)
    assert stored_files(media) == [media / document.file.name]
    assert document.file.name.startswith(f"sources/{sha[:2]}/{sha}")
    history = document.history.get()
    assert (history.history_type, history.history_user, history.history_change_reason) == (
        "+", trial.coordinator, "Source document uploaded")


def test_the_same_file_twice_for_the_same_visit_is_one_document(trial, media):
    client = client_for(trial.cra)
    content = page_png()
    first = post(client, trial, "a.png", content)
    again = post(client, trial, "b.png", content)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert SourceDocument.objects.count() == 1
    # for the subject as a whole it is another document, and the file is still stored once
    subject_level = post(client, trial, "c.png", content, visit_oid="")
    assert subject_level.status_code == 201 and subject_level.json()["visit"] is None
    assert SourceDocument.objects.count() == 2 and len(stored_files(media)) == 1


def _bomb_png() -> bytes:
    """A PNG header claiming 30000 x 30000 pixels (900 megapixels): refused before any decoding."""
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (30000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND",
                                                                                                             b"")


def _encrypted_pdf(user_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter  # a test dependency (requirements/dev.txt)

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(_image("pdf-text"))))
    writer.encrypt(user_password=user_password, owner_password="owner-secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize("content, message", [
    (b"PK\x03\x04 a zip file, not a scan", "not a PDF, PNG, JPEG or TIFF"),
    (b"<html><script>alert(1)</script></html>", "not a PDF, PNG, JPEG or TIFF"),
    (b"%PDF-1.4\n%garbage that is no pdf at all\n", "malformed"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDRtruncated", "damaged"),
])
def test_wrong_types_and_malformed_files_are_refused_and_nothing_is_stored(trial, media, content, message):
    response = post(client_for(trial.coordinator), trial, "report.pdf", content)
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert SourceDocument.objects.count() == 0 and SourceDocument.history.count() == 0
    assert stored_files(media) == []


def test_a_decompression_bomb_is_refused_before_decoding(trial, media):
    response = post(client_for(trial.coordinator), trial, "big.png", _bomb_png())
    assert response.status_code == 400
    assert "decompression bomb" in response.json()["message"] or "too large" in response.json()["message"]
    assert SourceDocument.objects.count() == 0 and stored_files(media) == []


@pytest.mark.parametrize("user_password", ["", "secret"])
def test_an_encrypted_pdf_is_refused(trial, media, user_password):
    response = post(client_for(trial.coordinator), trial, "locked.pdf", _encrypted_pdf(user_password))
    assert response.status_code == 400 and "encrypted" in response.json()["message"]
    assert SourceDocument.objects.count() == 0 and stored_files(media) == []


def test_a_pdf_embedding_a_huge_image_on_a_small_page_is_refused(trial, media, settings):
    """The page passes the rendering check (0.5 inch at 200 dpi is 100 x 100 pixels) but the scan
    it holds is 1500 x 1500: reading the page decodes the whole image, so it is refused as a bomb."""
    from PIL import Image

    settings.SDV_MAX_IMAGE_PIXELS = 1_000_000
    content = samples.images_pdf([Image.new("L", (1500, 1500), 255)], dpi=3000)
    response = post(client_for(trial.coordinator), trial, "scan.pdf", content)
    assert response.status_code == 400, response.json()
    assert "An image on page 1 is 1500 x 1500 pixels, over the limit of 1,000,000" in response.json()["message"]
    assert SourceDocument.objects.count() == 0 and stored_files(media) == []


def test_a_pdf_over_the_page_limit_is_refused(trial, media, settings):
    settings.SDV_UPLOAD_MAX_PAGES = 1
    response = post(client_for(trial.coordinator), trial, "scan.pdf", _image("pdf-image"))
    assert response.status_code == 400 and "2 pages, over the limit of 1" in response.json()["message"]
    assert SourceDocument.objects.count() == 0 and stored_files(media) == []


def test_size_and_page_limits_come_from_settings(trial, media, settings):
    settings.SDV_UPLOAD_MAX_PAGES = 2
    response = post(client_for(trial.coordinator), trial, "fax.tif", _image("tiff"))
    assert response.status_code == 400 and "3 pages, over the limit of 2" in response.json()["message"]
    settings.SDV_UPLOAD_MAX_BYTES = 2048
    response = post(client_for(trial.coordinator), trial, "scan.png", page_png())
    assert response.status_code == 400 and "over the limit of 2,048 bytes" in response.json()["message"]
    assert SourceDocument.objects.count() == 0 and stored_files(media) == []


def test_a_page_too_large_to_render_is_refused(trial, media, settings):
    settings.SDV_MAX_IMAGE_PIXELS = 1_000_000  # an A4 page at 200 dpi is 3.9 million pixels
    response = post(client_for(trial.coordinator), trial, "report.pdf", _image("pdf-text"))
    assert response.status_code == 400 and "over the limit of 1,000,000 pixels" in response.json()["message"]
    assert SourceDocument.objects.count() == 0 and stored_files(media) == []


@pytest.mark.parametrize("fields, field, text", [
    ({"subject_id": "999-999"}, "subject_id", "No subject '999-999' in study LAB-017"),
    ({"visit_oid": "SE.NOPE"}, "visit_oid", "has no visit 'SE.NOPE'"),
    # another site's subject does not exist for the coordinator of site 101
    ({"subject_id": "102-001"}, "subject_id", "No subject '102-001'"),
])
def test_an_unknown_subject_or_visit_is_a_400_naming_it(trial, media, fields, field, text):
    data = {"study": trial.study.pk, "subject_id": "101-004", "visit_oid": "SE.WEEK4",
            "file": upload_file("a.png", page_png()), **fields}
    response = client_for(trial.coordinator).post(URL, data, format="multipart")
    assert response.status_code == 400
    assert text in response.json()["message"] and field in response.json()["extra"]["fields"]
    assert SourceDocument.objects.count() == 0 and stored_files(media) == []


@pytest.mark.parametrize("data", [{}, {"study": "abc"}, {"study": 2**70}, {"study": 1, "subject_id": "x"}])
def test_bad_input_is_a_400_never_a_500(trial, media, data):
    response = client_for(trial.cra).post(URL, data, format="multipart")
    assert response.status_code == 400
    assert set(response.json()) == {"message", "extra"}


def test_roles_that_neither_enter_data_nor_verify_may_not_upload(trial, media):
    response = post(client_for(trial.data_manager), trial, "a.png", page_png())
    assert response.status_code == 403
    assert SourceDocument.objects.count() == 0 and stored_files(media) == []


def test_documents_and_their_files_are_site_scoped(trial, media):
    mine = post(client_for(trial.coordinator), trial, "a.png", page_png()).json()
    theirs = post(client_for(trial.other_coordinator), trial, "b.png", page_png(subject_id="102-001"),
                  subject_id="102-001").json()
    coordinator = client_for(trial.coordinator)
    assert [d["id"] for d in coordinator.get(URL, {"study": trial.study.pk}).json()["results"]] == [mine["id"]]
    served = coordinator.get(f"{URL}{mine['id']}/file/")
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert b"".join(served.streaming_content).startswith(b"\x89PNG")
    # another site's file: 404, like a file that does not exist
    assert coordinator.get(f"{URL}{theirs['id']}/file/").status_code == 404
    assert coordinator.get(f"{URL}{theirs['id']}/").status_code == 404
    assert coordinator.get(f"{URL}{2**64}/file/").status_code == 404
    # the CRA of site 101 sees site 101's only; the data manager both
    assert {d["id"] for d in client_for(trial.cra).get(URL).json()["results"]} == {mine["id"]}
    assert {d["id"] for d in client_for(trial.data_manager).get(URL).json()["results"]} == {mine["id"], theirs["id"]}


def test_media_is_not_reachable_as_static_files(trial, media, client):
    document = SourceDocument.objects.get(pk=post(client_for(trial.coordinator), trial, "a.png",
                                                  page_png()).json()["id"])
    client.force_login(trial.coordinator)
    assert client.get(f"/media/{document.file.name}").status_code == 404
    assert client.get(f"/static/{document.file.name}").status_code == 404


def test_a_media_root_inside_the_static_files_is_refused_at_start():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], capture_output=True, text=True,
                            env={"DJANGO_SETTINGS_MODULE": "config.settings.test", "MEDIA_ROOT": "static/uploads",
                                 "PATH": "/usr/bin:/bin"}, cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert result.returncode != 0 and "must not be inside" in result.stderr



def test_an_upload_that_fails_to_be_recorded_leaves_no_file(trial, media, settings, monkeypatch):
    """The document's row and its event are one transaction; when it fails (here the event cannot
    be published) the file moved into the store is removed: nothing recorded, nothing kept."""
    import sdv.documents

    def broker_down(**kwargs):
        raise RuntimeError("the event could not be published")

    settings.SDV_VERIFY_ON_UPLOAD = True
    monkeypatch.setattr(sdv.documents, "event_publish", broker_down)
    with pytest.raises(RuntimeError):
        post(client_for(trial.coordinator), trial, "a.png", page_png())
    assert SourceDocument.objects.count() == 0 and SourceDocument.history.count() == 0
    assert stored_files(media) == []
    # a file another document already holds is kept
    monkeypatch.undo()
    settings.SDV_VERIFY_ON_UPLOAD = False
    kept = post(client_for(trial.coordinator), trial, "a.png", page_png(), visit_oid="")
    assert kept.status_code == 201
    settings.SDV_VERIFY_ON_UPLOAD = True
    monkeypatch.setattr(sdv.documents, "event_publish", broker_down)
    with pytest.raises(RuntimeError):
        post(client_for(trial.coordinator), trial, "a.png", page_png())
    assert SourceDocument.objects.count() == 1 and len(stored_files(media)) == 1
