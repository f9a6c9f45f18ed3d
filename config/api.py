"""API plumbing shared by every app: one error shape, one pagination, filters that refuse what
they do not know, and the HTTP contract of every view (ETag / If-Match, deprecation headers).

Every API view mixes in `ApiView` (tests/test_api_contract.py checks it), so the contract is kept
in one place instead of in each view."""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

import django_filters
from django import forms
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import Q
from django.http import Http404, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.views import exception_handler as drf_exception_handler

# Ids are bigint at most: a longer one cannot exist, so it never reaches the database.
ID_PATTERN = "[0-9]{1,18}"
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


# --- Filters -----------------------------------------------------------------------------------


class BoundedIntegerField(forms.IntegerField):
    """An integer the database can compare: outside bigint it is a 400, never an overflow."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", BIGINT_MIN)
        kwargs.setdefault("max_value", BIGINT_MAX)
        super().__init__(*args, **kwargs)


class IdField(serializers.IntegerField):
    """An id in a request body: a positive bigint (a larger one is a 400, not an overflow)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", BIGINT_MAX)
        super().__init__(**kwargs)


class IntegerFilter(django_filters.NumberFilter):
    field_class = BoundedIntegerField


class UtcDateTimeField(django_filters.fields.IsoDateTimeField):
    """ISO 8601, converted to UTC before it reaches the database (PostgreSQL refuses offsets past
    +-15:59 that Python accepts); a value that leaves the calendar in UTC is a 400."""

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("Enter a date-time between years 1 and 9999 in UTC.", code="invalid")


class DateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class FilterSet(django_filters.FilterSet):
    """The base of every API filter.

    - A foreign-key filter compares ids without checking that the id exists: django-filter's
      default validates it against the whole table, which would tell a site user whether another
      site's subject exists (400 "invalid choice" vs an empty list).
    - Integers are bounded to bigint and date-times converted to UTC (a 400, never a 500).
    - `updated_since` (rows created or changed at or after a date-time, for incremental pulls)
      is added to every list whose model records when its rows change: its audit trail
      (simple-history) or the timestamps named in `updated_since_fields`.
    - Filters named in `deprecated_filters` still work and answer with Deprecation headers."""

    FILTER_DEFAULTS = {
        **django_filters.FilterSet.FILTER_DEFAULTS,
        models.ForeignKey: {"filter_class": IntegerFilter},
        models.OneToOneField: {"filter_class": IntegerFilter},
        models.AutoField: {"filter_class": IntegerFilter},
        models.BigAutoField: {"filter_class": IntegerFilter},
        models.IntegerField: {"filter_class": IntegerFilter},
        models.BigIntegerField: {"filter_class": IntegerFilter},
        models.PositiveIntegerField: {"filter_class": IntegerFilter},
        models.PositiveSmallIntegerField: {"filter_class": IntegerFilter},
        models.SmallIntegerField: {"filter_class": IntegerFilter},
        models.DateTimeField: {"filter_class": DateTimeFilter},
    }
    updated_since_fields: tuple[str, ...] = ()
    deprecated_filters: dict[str, "Deprecation"] = {}

    @classmethod
    def get_filters(cls):
        filters = super().get_filters()
        model = cls._meta.model
        if model is not None and "updated_since" not in filters and cls._updated_since_supported(model):
            filters["updated_since"] = DateTimeFilter(
                method="filter_updated_since",
                help_text="Only rows created or changed at or after this date-time (ISO 8601): for "
                          "incremental pulls. Changes come from the audit trail, so none is missed.")
        return filters

    @classmethod
    def _updated_since_supported(cls, model) -> bool:
        return bool(cls.updated_since_fields) or hasattr(model, "history")

    def filter_updated_since(self, queryset, name, value):
        if value is None:
            return queryset
        condition = Q()
        for field in self.updated_since_fields:
            condition |= Q(**{f"{field}__gte": value})
        model = queryset.model
        if hasattr(model, "history"):
            changed = model.history.filter(history_date__gte=value).values(model._meta.pk.attname)
            condition |= Q(pk__in=changed)
        return queryset.filter(condition)


class FilterBackend(DjangoFilterBackend):
    """django-filter, and on lists a 400 naming any query parameter the list does not know (a
    misspelt filter would otherwise return every row)."""

    filterset_base = FilterSet
    always_allowed = {"format"}

    def filter_queryset(self, request, queryset, view):
        if getattr(view, "action", None) == "list":
            filterset_class = self.get_filterset_class(view, queryset)
            known = set(filterset_class.base_filters) if filterset_class else set()
            known |= self.always_allowed | pagination_parameters(view)
            unknown = sorted(set(request.query_params) - known)
            if unknown:
                raise exceptions.ValidationError(
                    {"query": [f"Unknown query parameter(s): {', '.join(unknown)}. "
                               f"This list takes: {', '.join(sorted(known))}."]})
        return super().filter_queryset(request, queryset, view)


def pagination_parameters(view) -> set[str]:
    paginator = getattr(view, "paginator", None)
    if paginator is None:
        return set()
    return {name for name in (getattr(paginator, "page_query_param", None),
                              getattr(paginator, "page_size_query_param", None)) if name}


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


# --- The HTTP contract of every view -------------------------------------------------------------


@dataclass(frozen=True)
class Deprecation:
    """A deprecated operation or filter: it keeps working until `sunset`, and every answer says
    so with the Deprecation (RFC 9745) and Sunset (RFC 8594) headers and a link to what replaces it."""

    since: date
    sunset: date
    successor: str = ""  # the path or parameter to use instead

    def headers(self) -> dict[str, str]:
        since = int(datetime.combine(self.since, time(), tzinfo=UTC).timestamp())
        sunset = datetime.combine(self.sunset, time(), tzinfo=UTC).timestamp()
        headers = {"Deprecation": f"@{since}", "Sunset": http_date(sunset)}
        links = ['</api/docs/>; rel="deprecation"']  # the schema's docs mark it and name what replaces it
        if self.successor.startswith("/"):
            links.append(f'<{self.successor}>; rel="successor-version"')
        headers["Link"] = ", ".join(links)
        return headers


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The resource has changed since you read it (If-Match)."
    default_code = "precondition_failed"


def etag_of(data) -> str:
    """A strong ETag of a representation: the same JSON, the same tag."""
    payload = json.dumps(data, cls=JSONEncoder, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return '"' + hashlib.sha256(payload.encode()).hexdigest()[:32] + '"'


def _etags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


class ApiView:
    # Mixed into every API view, first in the bases (a comment, not a docstring: the schema would
    # show a docstring as the description of every view that has none of its own).
    # - `lookup_value_regex`: an id is digits that fit a bigint; anything else is not a route (404).
    # - ETag on every detail GET and on the answer to PATCH/PUT; `If-None-Match` answers 304.
    # - `If-Match` on PATCH/PUT: compared with the ETag of what GET on the same URL answers now,
    #   412 when it differs (nothing changed). Views whose service checks a version under a row
    #   lock also pass `if_match_version` to it, so no write can slip in between.
    # - `deprecations`: action (viewsets) or method (APIViews) -> Deprecation headers.
    # - `etag_methods`: for a plain APIView, the methods that answer one resource (GET's included).

    lookup_value_regex = ID_PATTERN
    deprecations: dict[str, Deprecation] = {}
    etag_methods: tuple[str, ...] = ()
    if_match_version: int | None = None

    def _has_detail_get(self) -> bool:
        action_map = getattr(self, "action_map", None)
        if action_map is not None:
            return action_map.get("get") == "retrieve"
        return "get" in self.etag_methods

    def _current_representation(self, request, *args, **kwargs):
        action_map = getattr(self, "action_map", None)
        if action_map is None:
            return self.get(request, *args, **kwargs).data
        saved = self.action
        self.action = "retrieve"  # the serializer GET answers with
        try:
            return self.retrieve(request, *args, **kwargs).data
        finally:
            self.action = saved

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if_match = request.headers.get("If-Match")
        if request.method in ("PATCH", "PUT") and if_match is not None and self._has_detail_get():
            current = self._current_representation(request, *args, **kwargs)
            tag = etag_of(current)
            if if_match.strip() != "*" and tag not in _etags(if_match):
                raise PreconditionFailed({"detail": PreconditionFailed.default_detail, "etag": tag})
            if isinstance(current, dict) and isinstance(current.get("version"), int):
                self.if_match_version = current["version"]

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        method = request.method.lower()
        if (isinstance(response, Response) and response.status_code == 200 and response.data is not None
                and method in ("get", "head", "patch", "put") and self._has_detail_get()):
            tag = etag_of(response.data)
            if method in ("get", "head") and tag in _etags(request.headers.get("If-None-Match", "")):
                not_modified = Response(status=status.HTTP_304_NOT_MODIFIED)
                not_modified["ETag"] = tag
                return super().finalize_response(request, not_modified, *args, **kwargs)
            response["ETag"] = tag
        for deprecation in self._deprecations_used(request):
            for header, value in deprecation.headers().items():
                response[header] = value
        return response

    def _deprecations_used(self, request) -> list[Deprecation]:
        used = []
        operation = self.deprecations.get(getattr(self, "action", None) or request.method.lower())
        if operation is not None:
            used.append(operation)
        filterset_class = getattr(self, "filterset_class", None)
        for name, deprecation in getattr(filterset_class, "deprecated_filters", {}).items():
            if name in request.query_params:
                used.append(deprecation)
        return used


# --- Errors ------------------------------------------------------------------------------------


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            text = _first_message(value)
            return text if key == "non_field_errors" else f"{key}: {text}"
        return "Invalid input."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid input."
    return str(detail)


def exception_handler(exc, context):
    """Every API error answers {"message": ..., "extra": {...}} (HackSoft styleguide)."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        extra = {"fields": detail if isinstance(detail, dict) else {"non_field_errors": detail}}
        message = _first_message(detail)
    else:
        message = str(detail.get("detail", detail)) if isinstance(detail, dict) else str(detail)
        extra = {k: v for k, v in detail.items() if k != "detail"} if isinstance(detail, dict) else {}
    return Response({"message": message, "extra": extra}, status=response.status_code, headers=response.headers)


def error_response(message: str, *, status_code: int = status.HTTP_400_BAD_REQUEST, **extra) -> Response:
    return Response({"message": message, "extra": extra}, status=status_code)


class ApiExceptionMiddleware:
    """What fails before DRF's handler sees it (Django's request parsing limits: too many fields,
    a body over DATA_UPLOAD_MAX_MEMORY_SIZE, a malformed multipart body) answers the error shape
    under /api/, not Django's HTML page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not request.path.startswith("/api/"):
            return None
        return request_error_response(exception)


def request_error_response(exception) -> JsonResponse | None:
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse({"message": "The request body is too large.", "extra": {}}, status=413)
    if isinstance(exception, (SuspiciousOperation, MultiPartParserError)):
        return JsonResponse({"message": f"Malformed request: {exception}", "extra": {}}, status=400)
    return None


@csrf_exempt  # a POST to no route is a 404, not a CSRF failure page
def api_not_found(request, *args, **kwargs) -> JsonResponse:
    """Any /api/ path no route matches (a malformed or too long id included): the error shape,
    also with DEBUG on, not an HTML page."""
    return JsonResponse({"message": "Not found.", "extra": {"path": request.path}}, status=404)
