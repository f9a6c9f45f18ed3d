"""The OpenAPI schema tells the truth about every operation (issue 24).

drf-spectacular describes the success answers from the serializers; this AutoSchema adds what
every view answers through the shared plumbing in config/api.py and config/idempotency.py: the
error codes with the one error shape, the Idempotency-Key, If-Match and ETag headers, and the
deprecations. `links_add` (a postprocessing hook) declares the links between operations that a
client (and schemathesis' stateful phase) follows: create a query, then read or answer it."""

import re

from django.core.exceptions import FieldDoesNotExist
from django.db import connection
from django.db.backends.base.operations import BaseDatabaseOperations
from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import permissions, serializers

from config.api import ID_PATTERN


class ErrorSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="What went wrong, for a person")
    extra = serializers.DictField(
        help_text="Details: `fields` (messages per field) on 400, `reasons` on a refused transition, "
                  "`etag` (the current one) on 412, `current_version` on a stale version (409)")

    class Meta:
        ref_name = "Error"


ERRORS = {
    "400": "Invalid input: a field, a filter or a query parameter (named in `extra`)",
    "401": "Not authenticated: no credentials, or expired or invalid ones",
    "403": "Authenticated, but this role may not do it",
    "404": "No such resource, or outside the caller's studies and sites (the same answer)",
    "409": "Conflict with the resource's state: a stale version, a run already active, or a request "
           "with the same Idempotency-Key still in progress",
    "412": "If-Match did not match the current ETag: nothing was changed",
    "413": "The request body is too large",
    "415": "Unsupported request media type",
    "422": "The Idempotency-Key was already used with another request body",
    "429": "Too many requests: retry after the Retry-After header's seconds",
}

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER,
    description="Any unique string of up to 255 printable ASCII characters (a UUID, say). The same key and "
                "body within 24 hours answer the first answer again and change nothing; the same key with "
                "another body answers 422. Kept per account.")
IF_MATCH = OpenApiParameter(
    "If-Match", str, OpenApiParameter.HEADER,
    description="The ETag of the representation the change is based on: 412 if it changed since.")


def _response_header(name: str, description: str, codes: list[str]) -> OpenApiParameter:
    return OpenApiParameter(name, str, OpenApiParameter.HEADER, description=description, response=codes)


class AutoSchema(openapi.AutoSchema):
    def _authenticated(self) -> bool:
        return not any(isinstance(p, permissions.AllowAny) for p in self.view.get_permissions())

    def _has_detail_get(self) -> bool:
        has = getattr(self.view, "_has_detail_get", None)
        return bool(has and has())

    def _action(self) -> str:
        return getattr(self.view, "action", None) or self.method.lower()

    def _deprecation(self):
        return getattr(self.view, "deprecations", {}).get(self._action())

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        success = ["200", "201", "202"]
        if self.method == "POST" and self._authenticated():
            parameters += [IDEMPOTENCY_KEY,
                           _response_header("Idempotent-Replayed", "`true` when this answer is the stored "
                                            "answer to an earlier request with the same Idempotency-Key", success)]
        if self._has_detail_get() and self.method in ("GET", "PATCH", "PUT"):
            parameters.append(_response_header("ETag", "The representation's entity tag (for If-Match and "
                                               "If-None-Match)", ["200"]))
            if self.method in ("PATCH", "PUT"):
                parameters.append(IF_MATCH)
        if self._deprecation() is not None:
            parameters += [_response_header("Deprecation", "When the operation was deprecated (RFC 9745)", success),
                           _response_header("Sunset", "When it stops working (RFC 8594)", success)]
        return parameters

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        if isinstance(field, serializers.ChoiceField) and not field.allow_blank and _model_field_blank(field):
            # A read-only choice of a blank=True column answers "" too (DRF drops allow_blank from
            # read-only fields): say so, as drf-spectacular says it for writable ones.
            field.allow_blank = True
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(schema, dict) and ("minimum" in schema or "maximum" in schema):
            _portable_integer_bounds(field, schema)
        return schema

    def _insert_field_validators(self, field, schema):
        super()._insert_field_validators(field, schema)
        if "minimum" in schema or "maximum" in schema:
            _portable_integer_bounds(field, schema)

    def _map_basic_serializer(self, serializer, direction):
        """In an answer every field is there (DRF writes each one), unless the serializer itself
        declared it `required=False` (a row that may lack it): say so, so clients need no Unset."""
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "response":
            serializer = serializer if isinstance(serializer, serializers.BaseSerializer) else serializer()
            declared = getattr(serializer, "_declared_fields", {})
            required = [name for name, field in serializer.fields.items()
                        if name in schema.get("properties", {}) and not field.write_only
                        and (field.read_only or field.required or name not in declared)]
            if required:
                schema["required"] = sorted(required)
        return schema

    def _resolve_path_parameters(self, variables):
        """Ids are routed by a digits-only pattern (config.api.ID_PATTERN): say integer, as they are."""
        parameters = super()._resolve_path_parameters(variables)
        for parameter in parameters:
            if parameter["schema"].get("pattern") == f"^{ID_PATTERN}$":
                parameter["schema"] = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}
                if parameter["name"] == "id" and "description" not in parameter:
                    parameter["description"] = "A unique integer value identifying this resource."
        return parameters

    def get_tags(self) -> list[str]:
        """One tag per resource (`queries`, `data-points`...), not one `v1` tag for everything:
        generated clients group their operations by tag."""
        tokens = self._tokenize_path()
        if tokens and re.fullmatch(r"v[0-9]+", tokens[0]) and len(tokens) > 1:
            return [tokens[1]]
        return super().get_tags()

    def is_deprecated(self) -> bool:
        return self._deprecation() is not None or super().is_deprecated()

    def _get_filter_parameters(self):
        parameters = super()._get_filter_parameters()
        filterset_class = getattr(self.view, "filterset_class", None)
        deprecated = getattr(filterset_class, "deprecated_filters", {})
        for parameter in parameters:
            if parameter["name"] in deprecated:
                parameter["deprecated"] = True
        return parameters

    def _error_codes(self, responses: dict) -> list[str]:
        has_body = self.method in ("POST", "PUT", "PATCH")
        has_path_parameters = "{" in self.path
        codes = {"401"}
        query = [p for p in self.get_override_parameters()
                 if isinstance(p, OpenApiParameter) and p.location == OpenApiParameter.QUERY]
        if has_body or self._is_list_view() or self._get_filter_parameters() or query:
            codes.add("400")
        if self._authenticated():
            codes |= {"403", "404"}
            if has_body:
                codes.add("409")
            if self.method == "POST":
                codes.add("422")
        if has_path_parameters or self._is_list_view():
            codes.add("404")  # a page past the end is 404 too
        if has_body:
            codes |= {"413", "415"}
        if self.method in ("PATCH", "PUT") and self._has_detail_get():
            codes.add("412")
        if self.view.get_throttles():
            codes.add("429")
        return sorted(code for code in codes if code not in responses)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes(responses):
            responses[code] = self._get_response_for_code(
                OpenApiResponse(ErrorSerializer, description=ERRORS[code]), code, direction=direction)
        if self.method == "GET" and self._has_detail_get():
            responses.setdefault("304", {"description": "Not modified: If-None-Match matched the current ETag"})
        return dict(sorted(responses.items()))


def _model_field(field):
    """The model field a ModelSerializer built `field` from (None for declared fields)."""
    parent = getattr(field, "parent", None)
    model = getattr(getattr(parent, "Meta", None), "model", None)
    if model is None or field.field_name in getattr(parent, "_declared_fields", {}):
        return None
    try:
        return model._meta.get_field(field.source)
    except (FieldDoesNotExist, TypeError):
        return None


def _model_field_blank(field) -> bool:
    model_field = _model_field(field)
    return bool(model_field is not None and getattr(model_field, "blank", False)
                and not getattr(model_field, "null", False))


def _portable_integer_bounds(field, schema: dict) -> None:
    """A model integer field's bounds come from the database Django is connected to (SQLite says
    64 bits for every integer column). The committed schema must not depend on where it was
    generated: state the bounds PostgreSQL, the production database, has."""
    model_field = _model_field(field)
    if model_field is None:
        return
    internal = model_field.get_internal_type()
    if internal not in BaseDatabaseOperations.integer_field_ranges:
        return
    here = connection.ops.integer_field_range(internal)
    portable = BaseDatabaseOperations.integer_field_ranges[internal]
    for key, now, then in (("minimum", here[0], portable[0]), ("maximum", here[1], portable[1])):
        if schema.get(key) == now:
            schema[key] = then
    if schema.get("maximum", 0) <= 2**31 - 1 and schema.get("minimum", 0) >= -(2**31):
        schema.pop("format", None)


# --- Links ---------------------------------------------------------------------------------------

# Answers that name another resource than their own path's: operationId -> (path of the target).
CROSS_LINKS = {
    "v1_studies_imports_create": ("/api/v1/imports/{id}/", "$response.body#/id"),
    "v1_discrepancies_run_create": ("/api/v1/workflow-runs/{id}/", "$response.body#/run"),
}


def _operation_name(path: str, prefix: str, method: str) -> str:
    rest = path[len(prefix):].strip("/")
    return f"{method}_{rest.replace('/', '_').replace('-', '_')}" if rest else f"{method}_detail"


def _links_to(paths: dict, target_prefix: str, pointer: str) -> dict:
    links = {}
    for path, operations in paths.items():
        if not path.startswith(target_prefix):
            continue
        variables = re.findall(r"{(\w+)}", path)
        if variables != ["id"]:
            continue
        for method, operation in operations.items():
            links[_operation_name(path, target_prefix, method)] = {
                "operationId": operation["operationId"],
                "parameters": {"id": pointer},
            }
    return links


def links_add(result, generator, request, public):
    """From each create (201/202) to every operation on the created resource's URL, and from each
    list to every operation on its first row's URL (`$response.body#/results/0/id`)."""
    paths = result.get("paths", {})
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation.get("responses", {})
            if operation["operationId"] in CROSS_LINKS:
                target, pointer = CROSS_LINKS[operation["operationId"]]
                for code in ("201", "202"):
                    if code in responses:
                        responses[code]["links"] = _links_to(paths, target, pointer)
                continue
            if "{" in path:
                continue
            if method == "post":
                for code in ("201", "202"):
                    if code in responses:
                        links = _links_to(paths, path + "{id}/", "$response.body#/id")
                        if links:
                            responses[code]["links"] = links
            elif method == "get" and "200" in responses:
                body = responses["200"].get("content", {}).get("application/json", {}).get("schema", {})
                if "$ref" in body and body["$ref"].split("/")[-1].startswith("Paginated"):
                    links = _links_to(paths, path + "{id}/", "$response.body#/results/0/id")
                    if links:
                        responses["200"]["links"] = links
    return result
