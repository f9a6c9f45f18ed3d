"""What every importer shares: the Import record, atomicity, serialisation per study, size limits.

An importer is a function `load(*, run: ImportRun) -> None` that reads its input and writes through
`run` (and the DataPointWriter). `import_execute` runs it inside one transaction holding a lock on
the study, so a failure at any point leaves the study exactly as it was, two imports of one study
never interleave, and the Import record, written outside that transaction, says what went wrong."""

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from agents.orchestrator import workflow_trigger
from studies.audit import audited_bulk_create, audited_bulk_update
from studies.models import DataPoint, Import, Study, SubjectVisit

# Who the import commands' writes are attributed to unless --actor names someone.
IMPORT_ACCOUNT = "system.import"

logger = structlog.get_logger(__name__)

# Sent with `run` when an import has loaded, before it commits; a receiver's writes commit or roll
# back with the import (the queries app generates edit checks from the new metadata).
import_loaded = Signal()


class ImportFailed(Exception):
    """A problem with the input that the user must fix. `where` says where (line, column, record)."""

    def __init__(self, message: str, *, where: str = ""):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self):
        return f"{self.message} ({self.where})" if self.where else self.message


@dataclass
class ImportRun:
    """The context an importer writes through: the record, the actor, counters and warnings."""

    record: Import
    actor: object
    study: Study | None = None
    counts: Counter = field(default_factory=Counter)
    warnings: list[dict] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """The reason for change of every write this import makes (history rows)."""
        return f"EDC sync {self.record.pk}"

    def warn(self, message: str, *, where: str = "") -> None:
        # Kept bounded: a file with a million bad rows must not make a million-entry JSON field.
        if len(self.warnings) < 1000:
            self.warnings.append({"message": message, "where": where})
        self.counts["warnings"] += 1

    def attach_study(self, study: Study) -> Study:
        """Lock the study for the rest of the import (serialises imports of one study)."""
        locked = Study.objects.select_for_update().get(pk=study.pk)
        self.study = locked
        if self.record.study_id != locked.pk:
            Import.objects.filter(pk=self.record.pk).update(study=locked)
            self.record.study = locked
        return locked



def file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_size(path: Path) -> None:
    size = path.stat().st_size
    if size > settings.IMPORT_MAX_BYTES:
        raise ImportFailed(
            f"The file is {size:,} bytes, over the limit of {settings.IMPORT_MAX_BYTES:,} (IMPORT_MAX_BYTES)."
        )


def import_create(*, source: str, actor, study: Study | None = None, path: Path | None = None,
                  filename: str = "", full_snapshot: bool = False) -> Import:
    """Record an import before it runs (committed at once, so even a refused file is on record)."""
    record = Import(source=source, study=study, created_by=actor if getattr(actor, "pk", None) else None,
                    filename=filename or (path.name if path else ""), full_snapshot=full_snapshot)
    if path is not None:
        record.file_sha256, record.file_size = file_digest(path)
    record.save()
    return record


def import_execute(*, record: Import, actor, load: Callable[[ImportRun], None]) -> Import:
    """Run `load` atomically and record the outcome on `record`. Never raises for bad input: the
    Import's status and errors say what happened. Programming errors are recorded and re-raised."""
    Import.objects.filter(pk=record.pk).update(status=Import.Status.RUNNING, started_at=timezone.now())
    run = ImportRun(record=record, actor=actor, study=record.study)
    error: dict | None = None
    unexpected: BaseException | None = None
    try:
        with transaction.atomic():
            if run.study is not None:
                run.attach_study(run.study)
            load(run)
            # Inside the import's transaction: what other apps derive from the new data (edit
            # checks from the metadata) is stored with it, or not at all.
            import_loaded.send(sender=ImportRun, run=run)
    except ImportFailed as exc:
        error = {"message": exc.message, "where": exc.where}
    except Exception as exc:  # recorded, then re-raised: a bug must not pass for bad input
        error = {"message": f"Internal error: {type(exc).__name__}: {exc}", "where": ""}
        unexpected = exc

    record.refresh_from_db()
    record.status = Import.Status.FAILED if error else Import.Status.SUCCEEDED
    record.errors = ([error] if error else []) + run.warnings
    # Where an upload is stored stays on record whatever happens (evidence, re-processing).
    kept = {key: value for key, value in record.counts.items() if key == "stored_as"}
    record.counts = {**kept, **(dict(run.counts) if not error else {})}
    record.progress = 100 if not error else record.progress
    record.finished_at = timezone.now()
    if run.study is not None and not error:
        record.study = run.study
    record.save()
    if not error:
        _statistics_refresh(run)
    if not error and record.study_id is not None:
        study_id = record.study_id
        transaction.on_commit(lambda: _workflows_trigger_on_import(study_id=study_id))
    if unexpected is not None:
        raise unexpected
    return record


# Rows an import must add or change before the planner's statistics are refreshed at once
STATISTICS_REFRESH_ROWS = 50_000


def _statistics_refresh(run: ImportRun) -> None:
    """After a big load, refresh PostgreSQL's statistics of the tables it filled. Autovacuum gets
    there eventually; until it does, the planner believes the study has a handful of values per
    item and picks index scans that read every page of the table at random (3.7 s instead of
    0.4 s for the analyzer's lab scan on clindata)."""
    written = sum(v for k, v in run.counts.items() if k.endswith(("_created", "_changed")) and isinstance(v, int))
    if written < STATISTICS_REFRESH_ROWS or connection.vendor != "postgresql":
        return
    tables = [DataPoint._meta.db_table, DataPoint.history.model._meta.db_table, SubjectVisit._meta.db_table]
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")


def _workflows_trigger_on_import(*, study_id: int) -> None:
    """Start the workflows that declare `on_import` on the study. The import has succeeded and is
    committed whatever happens here: a workflow that cannot start is logged, never the import's failure."""
    try:
        workflow_trigger(trigger="import", study_id=study_id)
    except Exception:
        logger.exception("import_workflow_trigger_failed", study_id=study_id)


def definitions_sync(run: ImportRun, *, stored: dict, rows: dict[object, dict], build) -> tuple[list, list]:
    """Create the rows of `rows` (key -> field values) that `stored` (key -> object) lacks, with
    `build(key, fields)`, and update the stored ones whose fields differ: audited bulk writes with
    the import's reason. `stored` gains the new objects. Returns (created, changed)."""
    new, changed, changed_fields = [], [], set()
    for key, fields in rows.items():
        obj = stored.get(key)
        if obj is None:
            stored[key] = obj = build(key, fields)
            new.append(obj)
            continue
        diff = [name for name, value in fields.items() if getattr(obj, name) != value]
        if diff:
            for name in diff:
                setattr(obj, name, fields[name])
            changed.append(obj)
            changed_fields.update(diff)
    audited_bulk_create(new, actor=run.actor, reason=run.reason)
    if changed:
        audited_bulk_update(changed, sorted(changed_fields), actor=run.actor, reason=run.reason)
    return new, changed
