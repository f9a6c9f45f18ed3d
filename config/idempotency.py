"""Idempotency-Key on every API POST (issue 24, section 3).

A POST with the header is remembered per account for IDEMPOTENCY_KEY_HOURS (24). While the first
request runs, the same key answers 409 (for at most IDEMPOTENCY_IN_PROGRESS_SECONDS: a request
whose process died is then forgotten, its transaction having been rolled back). Once it
succeeded (2xx/3xx), the same key and body answer the stored answer again
(`Idempotent-Replayed: true`) without running the view; the same key with
another method, path or body answers 422. An answer of 4xx or 5xx is not kept: every endpoint is
atomic, so it changed nothing and the client may retry with the same key.

The fingerprint of a JSON body is taken over its canonical form (key order and spacing do not
matter); of a multipart body over its fields and each file's sha256 (the boundary does not
matter); of anything else over its bytes."""

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils import timezone
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication

from config.api import request_error_response
from studies.models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEPT_HEADERS = ("Content-Type", "Location", "ETag")


def _error(message: str, status: int, **extra) -> JsonResponse:
    return JsonResponse({"message": message, "extra": extra}, status=status)


def _account(request):
    """The caller as the API will see it: a session user, or the user of a valid JWT. None when
    neither: the view itself then answers 401, and nothing is remembered."""
    if request.user.is_authenticated:
        return request.user
    try:
        found = JWTAuthentication().authenticate(Request(request))
    except Exception:  # an invalid or expired token: the view answers 401 the same way
        return None
    return found[0] if found else None


def _fingerprint(request) -> str:
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.path}?{request.META.get('QUERY_STRING', '')}\n".encode())
    content_type = request.content_type or ""
    if content_type.startswith("multipart/form-data"):
        fields = sorted((name, request.POST.getlist(name)) for name in request.POST)
        files = []
        for name in sorted(request.FILES):
            for upload in request.FILES.getlist(name):
                file_digest = hashlib.sha256()
                for chunk in upload.chunks():
                    file_digest.update(chunk)
                upload.seek(0)
                files.append((name, upload.name, file_digest.hexdigest()))
        digest.update(json.dumps([fields, files], sort_keys=True).encode())
        return digest.hexdigest()
    body = request.body
    if content_type == "application/json":
        try:
            body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
        except ValueError:
            pass  # malformed JSON: its bytes (the view answers 400 and nothing is kept)
    digest.update(body)
    return digest.hexdigest()


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= 255 and all(33 <= ord(c) <= 126 for c in key)


def _replay(record: IdempotencyKey) -> HttpResponse:
    response = HttpResponse(bytes(record.response_body), status=record.status_code)
    for name, value in record.response_headers.items():
        response[name] = value
    response[REPLAYED] = "true"
    return response


class IdempotencyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        key = request.headers.get(HEADER)
        if request.method != "POST" or key is None or not request.path.startswith("/api/"):
            return self.get_response(request)
        if not _valid_key(key):
            return _error(f"{HEADER} must be 1 to 255 printable ASCII characters.", 400, header=HEADER)
        user = _account(request)
        if user is None:
            return self.get_response(request)
        try:
            fingerprint = _fingerprint(request)
        except (SuspiciousOperation, MultiPartParserError) as error:  # Django's parsing limits
            return request_error_response(error)
        record, answer = self._claim(user=user, key=key, fingerprint=fingerprint, request=request)
        if answer is not None:
            return answer
        response = self.get_response(request)
        self._complete(record, response)
        return response

    def _claim(self, *, user, key, fingerprint, request):
        """(the claimed row, None), or (None, the answer to give instead of running the view)."""
        for _ in range(2):
            try:
                with transaction.atomic():
                    return IdempotencyKey.objects.create(user=user, key=key, fingerprint=fingerprint,
                                                         method=request.method, path=request.path[:2000]), None
            except IntegrityError:
                pass
            existing = IdempotencyKey.objects.filter(user=user, key=key).first()
            if existing is None:
                continue  # it was released in between: claim again
            expired = existing.created_at < timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_HOURS)
            if expired:
                IdempotencyKey.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
                continue
            if existing.fingerprint != fingerprint:
                return None, _error(f"This {HEADER} was already used with another request.", 422, header=HEADER,
                                    first_request={"method": existing.method, "path": existing.path})
            lease = timedelta(seconds=settings.IDEMPOTENCY_IN_PROGRESS_SECONDS)
            abandoned = existing.created_at < timezone.now() - lease
            if existing.status_code is None and abandoned:
                # Its process died mid-request; the request's transaction was rolled back with it.
                IdempotencyKey.objects.filter(pk=existing.pk, status_code=None).delete()
                continue
            if existing.status_code is None:
                return None, _error(f"A request with this {HEADER} is still in progress: retry later.", 409,
                                    header=HEADER)
            return None, _replay(existing)
        return None, _error(f"Could not claim this {HEADER}: retry.", 409, header=HEADER)

    def _complete(self, record: IdempotencyKey, response) -> None:
        if response.status_code >= 400 or getattr(response, "streaming", False):
            record.delete()  # nothing changed (or nothing to replay): the key may be used again
            return
        record.status_code = response.status_code
        record.response_body = response.content
        record.response_headers = {name: response[name] for name in KEPT_HEADERS if response.has_header(name)}
        record.completed_at = timezone.now()
        record.save(update_fields=["status_code", "response_body", "response_headers", "completed_at"])


def idempotency_keys_purge() -> int:
    """Forget keys older than the replay window (celery beat, hourly)."""
    cutoff = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
