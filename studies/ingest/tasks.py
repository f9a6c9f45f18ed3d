"""Background imports: thin tasks (id in, re-fetch, call the service, return if the row is gone)."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from studies.models import Import


def _fail(import_id: int, message: str) -> int:
    return Import.objects.filter(pk=import_id, status=Import.Status.RUNNING).update(
        status=Import.Status.FAILED, errors=[{"message": message, "where": ""}], finished_at=timezone.now())


@shared_task(name="studies.import_run_file", acks_late=True, reject_on_worker_lost=True)
def import_run_file(import_id: int) -> None:
    from studies.ingest.dispatch import file_import, stored_upload_path  # noqa: PLC0415

    # Claimed by compare-and-set: a redelivered task finds the import past "pending" and does nothing.
    claimed = Import.objects.filter(pk=import_id, status=Import.Status.PENDING).update(
        status=Import.Status.RUNNING, started_at=timezone.now())
    if claimed != 1:
        imports_fail_stale()
        return
    record = Import.objects.select_related("created_by", "study").get(pk=import_id)
    try:
        file_import(record=record, path=stored_upload_path(record), actor=record.created_by)
    except Exception as exc:
        # import_execute records what fails inside the import; this catches what fails before it
        # (a stored file gone missing, say), so no import stays "running" for ever.
        _fail(import_id, f"Internal error: {type(exc).__name__}: {exc}")
        raise


@shared_task(name="studies.imports_fail_stale")
def imports_fail_stale() -> int:
    """Mark failed the imports still "running" after the task hard time limit: their worker died
    (killed, out of memory) and nothing can be running them any more."""
    stale = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    return Import.objects.filter(status=Import.Status.RUNNING, started_at__lt=stale).update(
        status=Import.Status.FAILED, finished_at=timezone.now(),
        errors=[{"message": "The worker running this import stopped before it finished; nothing was "
                            "stored. Import the file again.", "where": ""}])
