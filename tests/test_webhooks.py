"""EDC webhooks: signature, timestamp window, nonce, idempotent delivery id, and the incremental
pull they start (on a real Celery worker, against the fake Vault server)."""

import time
import uuid

import pytest
from django.urls import reverse

from studies.models import EdcConnection, Import, WebhookDelivery
from studies.tasks import edc_sync_due
from studies.webhooks import webhook_signature
from tests.factories import StudyFactory
from tests.fakes import serve
from tests.fakes.veeva import FakeVault

SECRET = "whsec-0f9e8d7c6b5a"
PASSWORD = "vault-pass-never-logged"
BODY = b'{"event": "data_changed", "study": "ACME-101", "subjects": ["SCR-0001"]}'


@pytest.fixture
def credentials(settings):
    settings.EDC_SECRETS = {"TRIALOPS_EDC_HOOK_WEBHOOK_SECRET": SECRET, "TRIALOPS_EDC_HOOK_USERNAME": "svc",
                            "TRIALOPS_EDC_HOOK_PASSWORD": PASSWORD}
    return settings


def make_connection(url="https://vault.example.org"):
    return EdcConnection.objects.create(study=StudyFactory(), vendor=EdcConnection.Vendor.VEEVA, base_url=url,
                                        remote_study="ACME-101", credentials_env="TRIALOPS_EDC_HOOK")


def deliver(client, connection, *, body=BODY, secret=SECRET, timestamp=None, delivery=None, nonce=None,
            signature=None):
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "X-TrialOps-Timestamp": timestamp,
        "X-TrialOps-Delivery": delivery or uuid.uuid4().hex,
        "X-TrialOps-Nonce": nonce or uuid.uuid4().hex,
        "X-TrialOps-Signature": signature or "sha256=" + webhook_signature(secret=secret, timestamp=timestamp,
                                                                          body=body),
    }
    return client.post(reverse("edc-webhook", args=[connection.pk]), data=body, content_type="application/json",
                       headers=headers)


@pytest.mark.django_db
def test_a_bad_signature_is_refused_in_the_error_shape(client, credentials):
    connection = make_connection()
    response = deliver(client, connection, secret="not-the-secret")
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid signature.", "extra": {}}
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_body_changed_after_signing_is_refused(client, credentials):
    connection = make_connection()
    timestamp = str(int(time.time()))
    signature = webhook_signature(secret=SECRET, timestamp=timestamp, body=BODY)
    response = deliver(client, connection, body=BODY.replace(b"SCR-0001", b"SCR-0002"), timestamp=timestamp,
                       signature=signature)
    assert response.status_code == 401


@pytest.mark.django_db
def test_a_stale_timestamp_is_refused_even_when_signed(client, credentials):
    connection = make_connection()
    response = deliver(client, connection, timestamp=int(time.time()) - 301)
    assert response.status_code == 401
    assert response.json()["message"].startswith("Stale timestamp")
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_replayed_nonce_is_refused(client, credentials, django_capture_on_commit_callbacks):
    connection = make_connection()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert deliver(client, connection, nonce="n-1", delivery="d-1").status_code == 202
        replay = deliver(client, connection, nonce="n-1", delivery="d-2")
    assert replay.status_code == 401 and "nonce" in replay.json()["message"]
    assert list(WebhookDelivery.objects.values_list("delivery_id", flat=True)) == ["d-1"]
    assert len(callbacks) == 1


@pytest.mark.django_db
def test_missing_headers_are_a_bad_request(client, credentials):
    connection = make_connection()
    response = client.post(reverse("edc-webhook", args=[connection.pk]), data=BODY, content_type="application/json")
    assert response.status_code == 400
    assert "X-TrialOps-Signature" in response.json()["extra"]["missing"]


@pytest.mark.django_db
def test_an_unknown_or_disabled_connection_is_not_found(client, credentials):
    connection = make_connection()
    connection.enabled = False
    connection.save()
    assert deliver(client, connection).status_code == 404


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_valid_delivery_starts_one_incremental_pull_and_a_duplicate_does_nothing(client, credentials, worker):
    vault = FakeVault(username="svc", password=PASSWORD)
    with serve(vault) as url:
        connection = make_connection(url)
        first = deliver(client, connection, delivery="delivery-1")
        assert first.status_code == 202 and first.json()["status"] == "accepted"
        again = deliver(client, connection, delivery="delivery-1")
        assert again.status_code == 200 and again.json()["status"] == "duplicate"

        assert wait_for(lambda: Import.objects.filter(study=connection.study, finished_at__isnull=False).exists())
        time.sleep(1.0)  # room for a second pull, were one wrongly enqueued
        [pull] = Import.objects.filter(study=connection.study)
        assert pull.status == Import.Status.SUCCEEDED and pull.source == Import.Source.VEEVA
        assert pull.counts["data_points_created"] == 2
    assert WebhookDelivery.objects.get().delivery_id == "delivery-1"
    connection.refresh_from_db()
    assert connection.last_synced_at is not None and connection.sync_lease_until is None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_beat_task_pulls_the_connections_that_are_due(credentials, worker):
    vault = FakeVault(username="svc", password=PASSWORD)
    with serve(vault) as url:
        connection = make_connection(url)
        edc_sync_due.delay()
        assert wait_for(lambda: Import.objects.filter(study=connection.study, finished_at__isnull=False).exists())
    assert Import.objects.get(study=connection.study).status == Import.Status.SUCCEEDED
