"""Celery tasks of the studies app: thin (ids in, re-fetch, call the service, return quietly when
the row is gone), safe to re-run (the sync is claimed by compare-and-set and imports are idempotent)."""

import structlog
from celery import shared_task

from studies.edc.base import EdcTransientError
from studies.edc.services import edc_connections_due, edc_sync, edc_sync_claim, edc_sync_release
from studies.ingest import tasks as ingest_tasks  # noqa: F401 (autodiscovery finds studies.tasks only)
from studies.models import EdcConnection

logger = structlog.get_logger(__name__)


@shared_task(name="studies.idempotency_keys_purge")
def idempotency_keys_purge() -> None:
    """celery beat: forget Idempotency-Keys older than their replay window."""
    from config.idempotency import idempotency_keys_purge as purge

    logger.info("idempotency_keys_purged", deleted=purge())


@shared_task(name="studies.edc_sync_due")
def edc_sync_due() -> None:
    """celery beat: enqueue a pull of every enabled connection whose sync interval has passed."""
    for connection_id in edc_connections_due():
        edc_sync_connection.delay(connection_id)


@shared_task(name="studies.edc_sync_connection", autoretry_for=(EdcTransientError,), retry_backoff=30,
             retry_backoff_max=900, retry_jitter=True, max_retries=5)
def edc_sync_connection(connection_id: int, delivery_id: str = "") -> None:
    """Pull one connection (scheduled, or started by webhook delivery `delivery_id`)."""
    connection = EdcConnection.objects.select_related("study").filter(pk=connection_id, enabled=True).first()
    if connection is None:
        return
    if not edc_sync_claim(connection_id=connection_id):
        logger.info("edc_sync_already_running", connection_id=connection_id, delivery_id=delivery_id)
        return
    try:
        records = edc_sync(connection=connection)
    finally:
        edc_sync_release(connection_id=connection_id)
    logger.info("edc_sync_done", connection_id=connection_id, delivery_id=delivery_id,
                imports=[(r.pk, r.status) for r in records])
