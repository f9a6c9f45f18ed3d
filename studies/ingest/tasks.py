"""Background imports: a thin task (id in, re-fetch, call the service, return if the row is gone)."""

from celery import shared_task

from studies.models import Import


@shared_task(name="studies.import_run_file", acks_late=True, reject_on_worker_lost=True)
def import_run_file(import_id: int) -> None:
    from studies.ingest.dispatch import file_import, stored_upload_path  # noqa: PLC0415

    # Claimed by compare-and-set: a redelivered task finds the import past "pending" and does nothing.
    if Import.objects.filter(pk=import_id, status=Import.Status.PENDING).update(status=Import.Status.RUNNING) != 1:
        return
    record = Import.objects.select_related("created_by", "study").get(pk=import_id)
    path = stored_upload_path(record)
    file_import(record=record, path=path, actor=record.created_by)
