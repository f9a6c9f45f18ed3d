"""EDC "data changed" webhooks: POST /api/v1/webhooks/edc/<connection id>/.

A delivery is accepted when its HMAC-SHA256 signature over "<timestamp>.<body>" matches the
connection's secret (<prefix>_WEBHOOK_SECRET), its timestamp is within EDC_WEBHOOK_MAX_AGE_SECONDS
of now, and its nonce was never seen for the connection (a captured request cannot be replayed
inside the window). The delivery id makes a redelivery a no-op (200 "duplicate"). An accepted
delivery starts an incremental pull once its row is committed.

Headers: X-TrialOps-Signature ("sha256=<hex>" or "<hex>"), X-TrialOps-Timestamp (Unix seconds),
X-TrialOps-Delivery, X-TrialOps-Nonce."""

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import ApiView, error_response
from config.schema import ErrorSerializer
from studies.edc.base import EdcError, edc_secret
from studies.models import EdcConnection, WebhookDelivery


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def webhook_delivery_accept(*, connection: EdcConnection, delivery_id: str, nonce: str, signed_at: datetime,
                            payload: dict) -> tuple[WebhookDelivery, bool]:
    """Record a verified delivery and start the pull after commit. (delivery, False) when this
    delivery id was already accepted."""
    from studies.tasks import edc_sync_connection  # noqa: PLC0415 (tasks import the EDC services)

    existing = WebhookDelivery.objects.filter(delivery_id=delivery_id).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(connection=connection, delivery_id=delivery_id, nonce=nonce,
                                                      signed_at=signed_at, payload=payload)
            transaction.on_commit(lambda: edc_sync_connection.delay(connection.pk, delivery_id))
    except IntegrityError:
        # A concurrent redelivery won the race, or the nonce was used: which one, the caller asks.
        existing = WebhookDelivery.objects.filter(delivery_id=delivery_id).first()
        if existing is not None:
            return existing, False
        raise
    return delivery, True


class WebhookAnswerSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["accepted", "duplicate"])
    delivery = serializers.CharField()


def _signed_header(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, str, OpenApiParameter.HEADER, required=True, description=description)


class EdcWebhookView(ApiView, APIView):
    # Authenticated by the signature, not by a user: no session (so no CSRF), no JWT.
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        parameters=[
            _signed_header("X-TrialOps-Signature", "HMAC-SHA256 of `<timestamp>.<body>` with the connection's "
                           "secret, hex (optionally prefixed `sha256=`)"),
            _signed_header("X-TrialOps-Timestamp", "Unix seconds of signing"),
            _signed_header("X-TrialOps-Delivery", "The delivery's unique id (a redelivery answers 200 duplicate)"),
            _signed_header("X-TrialOps-Nonce", "Unique per connection (a replay is refused)"),
        ],
        responses={200: WebhookAnswerSerializer, 202: WebhookAnswerSerializer,
                   503: OpenApiResponse(ErrorSerializer, description="Webhooks are not configured for the "
                                                                     "connection")},
        auth=[],
    )
    def post(self, request, connection_id: int):
        """An EDC's signed "data changed" notification: starts an incremental pull of the connection."""
        connection = get_object_or_404(EdcConnection, pk=connection_id, enabled=True)
        body = request.body
        signature = request.headers.get("X-TrialOps-Signature", "").removeprefix("sha256=")
        timestamp = request.headers.get("X-TrialOps-Timestamp", "")
        delivery_id = request.headers.get("X-TrialOps-Delivery", "").strip()
        nonce = request.headers.get("X-TrialOps-Nonce", "").strip()
        missing = [name for name, value in (("X-TrialOps-Signature", signature), ("X-TrialOps-Timestamp", timestamp),
                                            ("X-TrialOps-Delivery", delivery_id), ("X-TrialOps-Nonce", nonce))
                   if not value]
        if missing:
            return error_response("Missing webhook headers.", status_code=status.HTTP_400_BAD_REQUEST,
                                  missing=missing)
        try:
            secret = edc_secret(connection, "WEBHOOK_SECRET")
        except EdcError:
            return error_response("Webhooks are not configured for this connection.",
                                  status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
        expected = webhook_signature(secret=secret, timestamp=timestamp, body=body)
        if not hmac.compare_digest(expected, signature):
            return error_response("Invalid signature.", status_code=status.HTTP_401_UNAUTHORIZED)
        try:
            signed = int(timestamp)
        except ValueError:
            return error_response("Invalid timestamp.", status_code=status.HTTP_401_UNAUTHORIZED)
        if abs(time.time() - signed) > settings.EDC_WEBHOOK_MAX_AGE_SECONDS:
            return error_response("Stale timestamp: outside the accepted window.",
                                  status_code=status.HTTP_401_UNAUTHORIZED,
                                  max_age_seconds=settings.EDC_WEBHOOK_MAX_AGE_SECONDS)
        if len(delivery_id) > 128 or len(nonce) > 128:
            return error_response("Delivery id and nonce are at most 128 characters.")
        if WebhookDelivery.objects.filter(delivery_id=delivery_id).exists():
            return Response({"status": "duplicate", "delivery": delivery_id}, status=status.HTTP_200_OK)
        if WebhookDelivery.objects.filter(connection=connection, nonce=nonce).exists():
            return error_response("Replayed request: the nonce was already used.",
                                  status_code=status.HTTP_401_UNAUTHORIZED)
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        _, created = webhook_delivery_accept(
            connection=connection, delivery_id=delivery_id, nonce=nonce,
            signed_at=datetime.fromtimestamp(signed, tz=UTC), payload=payload if isinstance(payload, dict) else {})
        if not created:
            return Response({"status": "duplicate", "delivery": delivery_id}, status=status.HTTP_200_OK)
        return Response({"status": "accepted", "delivery": delivery_id}, status=status.HTTP_202_ACCEPTED)
