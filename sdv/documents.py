"""Source documents: upload (checked, content-addressed, audited) and reads scoped by the user.

Storage: a file is stored once under MEDIA_ROOT/sources/<sha256[:2]>/<sha256><ext>, outside the
static root (config/settings/base.py refuses a MEDIA_ROOT that overlaps it) and never served by
the web server: only through sdv.workspace's file view, which reads the document through
`source_document_list` (site-scoped like every list). Nothing is stored when an upload is
refused: the file is checked in a temporary file first (sdv.verification.files), and moved into
place only when it is accepted."""

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from agents.events import event_publish
from sdv.models import SourceDocument
from sdv.verification.files import EXTENSIONS, DocumentRefused, document_inspect
from studies.audit import set_audit
from studies.models import Study, SubjectVisit
from studies.selectors import subject_list, user_can

UPLOAD_EVENT = "source_document.uploaded"
UPLOAD_CAPABILITIES = ("enter_data", "verify_source")


def source_document_list(*, user) -> QuerySet[SourceDocument]:
    """The documents of the subjects the user may see."""
    return SourceDocument.objects.filter(subject__in=subject_list(user=user)).select_related(
        "subject", "site", "visit__definition", "study")


def document_path(document: SourceDocument) -> Path:
    return Path(settings.MEDIA_ROOT) / document.file.name


def may_upload(*, user, site) -> bool:
    return any(user_can(user=user, capability=capability, site=site) for capability in UPLOAD_CAPABILITIES)


def _resolve(*, user, study: Study, subject_id: str, visit_oid: str):
    subject = subject_list(user=user).filter(study=study, subject_id=subject_id).first()
    if subject is None:  # outside the user's scope reads exactly like a subject that does not exist
        raise ValidationError({"subject_id": f"No subject {subject_id!r} in study {study.protocol_id}."})
    visit = None
    if visit_oid:
        visit = (SubjectVisit.objects.filter(subject=subject, definition__oid=visit_oid)
                 .order_by("repeat_key").first())
        if visit is None:
            raise ValidationError({"visit_oid": f"Subject {subject_id} has no visit {visit_oid!r} in study "
                                                f"{study.protocol_id}."})
    return subject, visit


def _spool(upload, directory: Path) -> tuple[Path, str, int]:
    """Copy the upload into a temporary file beside the store, hashing it on the way."""
    directory.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    handle, name = tempfile.mkstemp(dir=directory, prefix="upload-", suffix=".part")
    with os.fdopen(handle, "wb") as out:
        for chunk in upload.chunks():
            size += len(chunk)
            if size > settings.SDV_UPLOAD_MAX_BYTES:
                out.close()
                os.unlink(name)
                limit = settings.SDV_UPLOAD_MAX_BYTES
                raise ValidationError({"file": f"The file is over the limit of {limit:,} bytes."})
            digest.update(chunk)
            out.write(chunk)
    return Path(name), digest.hexdigest(), size


def document_upload(*, study: Study, subject_id: str, visit_oid: str = "", upload,
                    actor) -> tuple[SourceDocument, bool]:
    """Check, store and record an uploaded source document; returns (document, created). The
    same file for the same visit (or the same subject, without a visit) is the existing document.
    Refusals raise ValidationError (nothing stored) or PermissionDenied."""
    subject, visit = _resolve(user=actor, study=study, subject_id=(subject_id or "").strip(),
                              visit_oid=(visit_oid or "").strip())
    if not may_upload(user=actor, site=subject.site):
        raise PermissionDenied("Your role may not upload source documents at this site.")
    return document_from_upload(subject=subject, visit=visit, upload=upload, actor=actor,
                                reason="Source document uploaded")


def document_from_upload(*, subject, visit, upload, actor, reason: str) -> tuple[SourceDocument, bool]:
    """The checks and the store behind document_upload, for a caller that has checked access (the
    demo seeding writes as its system account)."""
    study = subject.study
    if upload is None:
        raise ValidationError({"file": "No file was sent."})
    if upload.size is not None and upload.size > settings.SDV_UPLOAD_MAX_BYTES:
        raise ValidationError({"file": f"The file is {upload.size:,} bytes, over the limit of "
                                       f"{settings.SDV_UPLOAD_MAX_BYTES:,} bytes."})
    store = Path(settings.MEDIA_ROOT)
    temporary, sha256, size = _spool(upload, store / "tmp")
    try:
        inspected = document_inspect(temporary, max_pages=settings.SDV_UPLOAD_MAX_PAGES,
                                     max_pixels=settings.SDV_MAX_IMAGE_PIXELS, dpi=settings.SDV_RENDER_DPI)
    except DocumentRefused as refused:
        temporary.unlink(missing_ok=True)
        raise ValidationError({"file": str(refused)}) from None
    existing = SourceDocument.objects.filter(subject=subject, visit=visit, sha256=sha256).first()
    if existing is not None:
        temporary.unlink(missing_ok=True)
        return existing, False
    name = f"sources/{sha256[:2]}/{sha256}{EXTENSIONS[inspected.content_type]}"
    final = store / name
    final.parent.mkdir(parents=True, exist_ok=True)
    new_file = not final.exists()  # else another document (of any subject) already holds these bytes
    os.replace(temporary, final)  # atomic; the same bytes under the same name whoever wrote them first
    document = SourceDocument(study=study, site=subject.site, subject=subject, visit=visit, file=name,
                              original_name=Path(upload.name or "").name[:255], content_type=inspected.content_type,
                              sha256=sha256, file_size=size, page_count=inspected.pages,
                              uploaded_by=actor if getattr(actor, "pk", None) else None)
    try:
        with transaction.atomic():
            set_audit(document, actor=actor, reason=reason)
            document.save()
            if settings.SDV_VERIFY_ON_UPLOAD:  # the source_verification workflow reads it (on commit)
                event_publish(type=UPLOAD_EVENT, study_id=study.pk, payload={"document": document.pk})
    except IntegrityError:  # the same file uploaded at the same moment: one document
        return SourceDocument.objects.get(subject=subject, visit=visit, sha256=sha256), False
    except BaseException:
        # Nothing recorded, nothing kept: the file goes unless a document holds it (written meanwhile).
        if new_file and not SourceDocument.objects.filter(file=name).exists():
            final.unlink(missing_ok=True)
        raise
    return document, True
