"""Which importer reads a file, told apart by its content, not its name; and uploads that are
imported in the background. The command line, the API and the UI all come through here."""

import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from studies.ingest.base import ImportFailed, import_create
from studies.models import Import, Study

SNIFF_BYTES = 4096


def sniff(path: Path) -> str:
    """Import.Source of a file: ODM XML, HL7 v2 or FHIR JSON."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<"):
        return Import.Source.ODM
    if text.startswith(b"MSH") or text.startswith(b"FHS") or text.startswith(b"BHS"):
        return Import.Source.HL7
    if text.startswith(b"{"):
        return Import.Source.FHIR
    raise ImportFailed("Unrecognised file: expected CDISC ODM XML, an HL7 v2 message or FHIR JSON.",
                       where="start of file")


def file_import(*, record: Import, path: Path, actor) -> Import:
    """Run the importer the file's content calls for, on an existing Import record."""
    from studies.ingest.base import import_execute  # noqa: PLC0415

    if record.source == Import.Source.ODM:
        from studies.ingest.odm import odm_import  # noqa: PLC0415

        return odm_import(path=path, actor=actor, study=record.study, full_snapshot=record.full_snapshot,
                          record=record)
    if record.source in (Import.Source.HL7, Import.Source.FHIR):
        from studies.ingest.labs import labs_import  # noqa: PLC0415

        return labs_import(paths=[path], study=record.study, actor=actor, record=record)

    def refuse(run):
        raise ImportFailed(f"{record.get_source_display()} files cannot be uploaded; use the command line.")

    return import_execute(record=record, actor=actor, load=refuse)


def _upload_dir() -> Path:
    return Path(settings.MEDIA_ROOT) / "imports"


def import_upload(*, study: Study, upload, actor, full_snapshot: bool = False) -> Import:
    """Store an uploaded file and queue its import. The file is kept under an opaque name (the
    original name is recorded on the Import) so it is available for re-processing and audit."""
    if upload.size > settings.IMPORT_MAX_BYTES:
        raise ValidationError({"file": f"The file is {upload.size:,} bytes, over the limit of "
                                       f"{settings.IMPORT_MAX_BYTES:,} bytes."})
    directory = _upload_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.upload"
    with open(path, "wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    try:
        source = sniff(path)
    except ImportFailed as exc:
        path.unlink(missing_ok=True)
        raise ValidationError({"file": exc.message})

    from studies.ingest.tasks import import_run_file  # noqa: PLC0415

    with transaction.atomic():
        record = import_create(source=source, actor=actor, study=study, path=path,
                               filename=Path(upload.name).name[:255], full_snapshot=full_snapshot)
        record.counts = {"stored_as": path.name}
        record.save(update_fields=["counts"])
        transaction.on_commit(lambda: import_run_file.delay(record.pk))
    return record


def stored_upload_path(record: Import) -> Path:
    return _upload_dir() / record.counts.get("stored_as", "")
