"""The API as a contract (issue 24): a truthful schema, committed and checked; ids, filters and
date-times that answer 400/404 with the error shape, never 500; ETag / If-Match; Idempotency-Key;
deprecation headers; incremental pulls with updated_since; bulk answers per item."""

import importlib
import inspect
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import FieldDoesNotExist
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from config.api import ApiView, etag_of
from queries.models import Query
from studies.models import DataPoint, IdempotencyKey, Import, Role
from tests.scoping import build_world

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def world(db):
    return build_world()


def token_client(user) -> APIClient:
    """A client authenticated as an integrator is: a JWT in the Authorization header (the
    Idempotency-Key middleware sees the account the way the API does)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def _api_views(patterns=None, prefix=""):
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _api_views(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern) and hasattr(pattern.callback, "cls"):
            yield prefix + str(pattern.pattern), pattern.callback.cls


# --- The schema ----------------------------------------------------------------------------------


def test_every_api_view_mixes_in_the_shared_contract():
    views = [(path, cls) for path, cls in _api_views() if path.startswith("api/") and "v1/" in path]
    assert len(views) > 30
    missing = sorted({cls.__name__ for _, cls in views if not issubclass(cls, ApiView)})
    assert missing == []


def test_a_field_read_through_a_nullable_relation_is_declared_nullable():
    """A dotted source over a nullable field answers null: the schema must say so."""
    undeclared = []
    modules = sorted({cls.__module__ for path, cls in _api_views() if path.startswith("api/")})
    assert {"studies.api", "queries.api", "deviations.api", "sdv.api", "agents.api"} <= set(modules)
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if not issubclass(cls, serializers.ModelSerializer) or cls.__module__ != module_name:
                continue
            for field_name, field in cls().fields.items():
                source = field.source or field_name
                if "." not in source:
                    continue  # drf-spectacular reads a model field's own null
                model, nullable = cls.Meta.model, False
                for part in source.split("."):
                    try:
                        model_field = model._meta.get_field(part)
                    except (FieldDoesNotExist, AttributeError):
                        break
                    nullable |= model_field.null
                    model = model_field.related_model
                if nullable and not field.allow_null:
                    undeclared.append(f"{module_name}.{name}.{field_name}")
    assert undeclared == []


def _generated_schema(tmp_path) -> str:
    out = tmp_path / "openapi.yaml"
    call_command("spectacular", file=str(out), validate=True, fail_on_warn=True)
    return out.read_text()


def test_the_committed_schema_is_the_generated_one(tmp_path):
    committed = (ROOT / "docs" / "openapi.yaml").read_text()
    assert _generated_schema(tmp_path) == committed, (
        "docs/openapi.yaml is not what the code generates: run `make schema` and commit the change")


@pytest.fixture(scope="module")
def schema():
    return yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())


def test_the_schema_is_versioned_with_the_api(schema, settings):
    assert schema["info"]["version"] == settings.API_VERSION
    assert settings.API_VERSION.split(".")[0] == "1"  # /api/v1/
    assert all(path.startswith("/api/v1/") for path in schema["paths"])


def test_every_operation_documents_its_errors_with_the_error_shape(schema):
    error_ref = "#/components/schemas/Error"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "401" in responses, (method, path)
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"]["$ref"] == error_ref, (method, path)
            if "{id}" in path:
                assert "404" in responses, (method, path)
            if method in ("post", "patch", "put"):
                assert {"400", "415"} <= set(responses), (method, path)


def test_the_schema_declares_headers_nullables_and_links(schema):
    paths = schema["paths"]
    subject = paths["/api/v1/subjects/{id}/"]["get"]
    assert "ETag" in subject["responses"]["200"]["headers"] and "304" in subject["responses"]
    patch = paths["/api/v1/data-points/{id}/"]["patch"]
    assert {"If-Match"} <= {p["name"] for p in patch["parameters"]} and "412" in patch["responses"]
    create = paths["/api/v1/queries/"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in create["parameters"]}
    assert {"409", "422"} <= set(create["responses"])
    links = create["responses"]["201"]["links"]
    assert links["post_answer"] == {"operationId": "v1_queries_answer_create",
                                    "parameters": {"id": "$response.body#/id"}}
    assert links["get_detail"]["operationId"] == "v1_queries_retrieve"
    listed = paths["/api/v1/queries/"]["get"]["responses"]["200"]["links"]
    assert listed["post_close"]["parameters"] == {"id": "$response.body#/results/0/id"}
    components = schema["components"]["schemas"]
    assert components["Query"]["properties"]["created_by"]["nullable"] is True
    assert components["SubjectVisit"]["properties"]["planned_day"]["nullable"] is True
    assert components["WorkflowRun"]["properties"]["triggered_by"]["nullable"] is True
    assert paths["/api/v1/queries/bulk/"]["post"]["deprecated"] is True
    changed_since = next(p for p in paths["/api/v1/data-points/"]["get"]["parameters"] if p["name"] == "changed_since")
    assert changed_since["deprecated"] is True
    assert "updated_since" in {p["name"] for p in paths["/api/v1/data-points/"]["get"]["parameters"]}


def test_every_list_of_records_takes_updated_since(schema):
    lists = {path for path, operations in schema["paths"].items()
             if "get" in operations and "page" in {p["name"] for p in operations["get"].get("parameters", [])}}
    without = sorted(path for path in lists
                     if "updated_since" not in {p["name"] for p in schema["paths"][path]["get"]["parameters"]})
    assert len(lists) >= 18
    assert without == ["/api/v1/agents/", "/api/v1/data-points/{id}/history/"]  # a registry; one record's trail


# --- Never a 500 for what a client sends ---------------------------------------------------------


def _detail_prefixes():
    from config.api_urls import router

    return [prefix for prefix, viewset, _ in router.registry if hasattr(viewset, "retrieve")]


@pytest.mark.parametrize("bad_id", ["21977809801", "99999999999999999999999", "null,null", "-1", "1.5", "%F0%9F%98%80"])
def test_a_detail_with_an_impossible_id_is_404_with_the_error_shape(world, bad_id):
    client = token_client(world.users[Role.DATA_MANAGER])
    for prefix in _detail_prefixes():
        response = client.get(f"/api/v1/{prefix}/{bad_id}/")
        assert response.status_code == 404, (prefix, response.content[:200])
        assert response["Content-Type"] == "application/json" and "message" in response.json(), prefix


def test_an_unknown_path_under_the_api_answers_the_error_shape(world):
    response = token_client(world.users[Role.DATA_MANAGER]).get("/api/v1/no-such-thing/")
    assert response.status_code == 404 and response.json()["message"] == "Not found."


def test_an_unknown_filter_is_400_naming_it_and_what_the_list_takes(world):
    client = token_client(world.users[Role.DATA_MANAGER])
    response = client.get("/api/v1/subjects/", {"study": world.studies["A"].pk, "stuydy": "1"})
    assert response.status_code == 400
    message = response.json()["message"]
    assert "stuydy" in message and "study" in message and "page_size" in message


@pytest.mark.parametrize("value", ["99999999999999999999", "-99999999999999999999", "1e400"])
def test_an_integer_filter_outside_bigint_is_400(world, value):
    response = token_client(world.users[Role.DATA_MANAGER]).get("/api/v1/data-points/", {"study": value})
    assert response.status_code == 400 and response.json()["extra"]["fields"]["study"]


def test_a_date_time_with_an_offset_postgresql_refuses_is_converted_to_utc(world):
    client = token_client(world.users[Role.DATA_MANAGER])
    response = client.get("/api/v1/data-points/", {"updated_since": "0359-12-31T18:10:23-18:49"})
    assert response.status_code == 200 and response.json()["count"] == 2  # study A's two
    outside = client.get("/api/v1/data-points/", {"updated_since": "0001-01-01T00:00:00+05:00"})
    assert outside.status_code == 400 and "updated_since" in outside.json()["extra"]["fields"]


# --- ETag and If-Match ---------------------------------------------------------------------------


def test_a_detail_carries_its_etag_and_if_none_match_answers_304(world):
    client = token_client(world.users[Role.DATA_MANAGER])
    url = f"/api/v1/subjects/{world.sites['A1'].subject.pk}/"
    response = client.get(url)
    assert response.status_code == 200 and response["ETag"] == etag_of(response.json())
    assert client.get(url, HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304
    assert client.get(url, HTTP_IF_NONE_MATCH='"other"').status_code == 200


def test_a_patch_with_a_stale_if_match_is_412_and_changes_nothing(world):
    point = world.sites["A1"].data_point
    client = token_client(world.users[Role.SITE_COORDINATOR])
    url = f"/api/v1/data-points/{point.pk}/"
    etag = client.get(url)["ETag"]
    assert client.patch(url, {"raw_value": "121", "reason": "transcription"}, format="json",
                        HTTP_IF_MATCH=etag).status_code == 200
    history = DataPoint.history.filter(id=point.pk).count()

    stale = client.patch(url, {"raw_value": "122", "reason": "again"}, format="json", HTTP_IF_MATCH=etag)

    assert stale.status_code == 412
    assert stale.json()["extra"]["etag"] == client.get(url)["ETag"] != etag
    point.refresh_from_db()
    assert point.raw_value == "121" and DataPoint.history.filter(id=point.pk).count() == history


def test_a_patch_with_the_current_etag_succeeds_and_answers_the_new_one(world):
    point = world.sites["A1"].data_point
    client = token_client(world.users[Role.SITE_COORDINATOR])
    url = f"/api/v1/data-points/{point.pk}/"

    response = client.patch(url, {"raw_value": "130", "reason": "source says 130"}, format="json",
                            HTTP_IF_MATCH=client.get(url)["ETag"])

    assert response.status_code == 200 and response.json()["raw_value"] == "130"
    assert response["ETag"] == client.get(url)["ETag"]
    latest = DataPoint.history.filter(id=point.pk).latest("history_id")
    assert (latest.raw_value, latest.history_user.username, latest.history_change_reason) == (
        "130", "sc_a1", "source says 130")


def test_if_match_also_guards_a_plain_api_view(world):
    """The risk configuration is one resource per study behind a plain APIView."""
    client = token_client(world.users[Role.DATA_MANAGER])
    url = f"/api/v1/risk-config/?study={world.studies['A'].pk}"
    etag = client.get(url)["ETag"]
    assert client.patch(url, {"high_from": 70, "reason": "tighter"}, format="json",
                        HTTP_IF_MATCH='"stale"').status_code == 412
    response = client.patch(url, {"high_from": 70, "reason": "tighter"}, format="json", HTTP_IF_MATCH=etag)
    assert response.status_code == 200 and response.json()["high_from"] == 70


# --- Idempotency-Key -----------------------------------------------------------------------------


def _query_text(point, what="the recorded value") -> str:
    return (f"{point.item.label} ({point.item.oid}) at {point.visit.definition.name}: {what} is "
            f"{point.raw_value} {point.item.units}. Please verify it against the source document.")


def _raise(client, point, key, text=None):
    return client.post("/api/v1/queries/", {"data_point": point.pk, "text": text or _query_text(point)},
                       format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_the_same_key_and_body_answer_the_first_answer_and_change_nothing(world):
    point = world.sites["A1"].data_point
    client = token_client(world.users[Role.DATA_MANAGER])
    before = Query.objects.count()

    first = _raise(client, point, "raise-1")
    again = _raise(client, point, "raise-1")

    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Query.objects.count() == before + 1
    assert Query.history.filter(id=first.json()["id"]).count() == 1


def test_the_same_key_with_another_body_is_422_and_changes_nothing(world):
    point = world.sites["A1"].data_point
    client = token_client(world.users[Role.DATA_MANAGER])
    assert _raise(client, point, "raise-2").status_code == 201
    before = Query.objects.count()

    other = _raise(client, point, "raise-2", text=_query_text(point, "the value entered"))

    assert other.status_code == 422 and other.json()["extra"]["header"] == "Idempotency-Key"
    assert Query.objects.count() == before


def test_keys_are_per_account(world):
    point = world.sites["A1"].data_point
    assert _raise(token_client(world.users[Role.DATA_MANAGER]), point, "shared").status_code == 201
    assert _raise(token_client(world.users[Role.CRA]), point, "shared").status_code == 201
    assert IdempotencyKey.objects.filter(key="shared").count() == 2


def test_a_refused_request_is_not_kept_so_the_corrected_retry_runs(world):
    point = world.sites["A1"].data_point
    client = token_client(world.users[Role.DATA_MANAGER])
    refused = client.post("/api/v1/queries/", {"data_point": point.pk, "text": "Please change it to 5."},
                          format="json", HTTP_IDEMPOTENCY_KEY="fix-and-retry")
    assert refused.status_code == 400 and not IdempotencyKey.objects.filter(key="fix-and-retry").exists()
    assert _raise(client, point, "fix-and-retry").status_code == 201


def test_a_key_in_progress_is_409_and_an_expired_one_is_forgotten(world):
    from rest_framework.test import APIRequestFactory

    from config.idempotency import _fingerprint

    point = world.sites["A1"].data_point
    dm = world.users[Role.DATA_MANAGER]
    body = {"data_point": point.pk, "text": _query_text(point)}
    fingerprint = _fingerprint(APIRequestFactory().post("/api/v1/queries/", body, format="json"))
    IdempotencyKey.objects.create(user=dm, key="busy", fingerprint=fingerprint, method="POST",
                                  path="/api/v1/queries/")
    before = Query.objects.count()

    assert _raise(token_client(dm), point, "busy").status_code == 409
    assert Query.objects.count() == before

    IdempotencyKey.objects.filter(key="busy").update(created_at=timezone.now() - timedelta(hours=25))
    assert _raise(token_client(dm), point, "busy").status_code == 201
    assert Query.objects.count() == before + 1


def test_an_invalid_key_is_400(world):
    response = _raise(token_client(world.users[Role.DATA_MANAGER]), world.sites["A1"].data_point, "with space")
    assert response.status_code == 400 and not IdempotencyKey.objects.exists()


def test_a_multipart_upload_retried_with_another_boundary_is_one_import(world):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.test_import_api import ODM

    client = token_client(world.users[Role.DATA_MANAGER])
    url = f"/api/v1/studies/{world.studies['A'].pk}/imports/"
    answers = []
    for _ in range(2):  # Django's test client writes a new random boundary each time
        upload = SimpleUploadedFile("export.xml", ODM, content_type="application/xml")
        answers.append(client.post(url, {"file": upload}, format="multipart", HTTP_IDEMPOTENCY_KEY="upload-1"))
    assert answers[0].status_code == answers[1].status_code == 202
    assert answers[1]["Idempotent-Replayed"] == "true"
    assert Import.objects.filter(study=world.studies["A"]).count() == 1


def test_expired_keys_are_purged(world):
    from config.idempotency import idempotency_keys_purge

    dm = world.users[Role.DATA_MANAGER]
    IdempotencyKey.objects.create(user=dm, key="old", fingerprint="x", method="POST", path="/",
                                  created_at=timezone.now() - timedelta(hours=25))
    IdempotencyKey.objects.create(user=dm, key="new", fingerprint="x", method="POST", path="/")
    assert idempotency_keys_purge() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]


# --- Deprecations, incremental pulls, bulk -------------------------------------------------------


def test_a_deprecated_operation_answers_deprecation_and_sunset_headers(world):
    a1 = world.sites["A1"]
    client = token_client(world.users[Role.DATA_MANAGER])
    response = client.post("/api/v1/queries/bulk/", {"action": "cancel", "ids": [a1.query.pk], "reason": "dup"},
                           format="json")
    assert response.status_code == 200
    assert response["Deprecation"].startswith("@") and response["Sunset"].endswith("GMT")
    assert '</api/v1/queries/bulk-actions/>; rel="successor-version"' in response["Link"]
    assert "Deprecation" not in client.get("/api/v1/queries/")


def test_a_deprecated_filter_answers_deprecation_headers_when_used(world):
    client = token_client(world.users[Role.DATA_MANAGER])
    assert "Sunset" in client.get("/api/v1/data-points/", {"changed_since": "2020-01-01T00:00:00Z"})
    assert "Sunset" not in client.get("/api/v1/data-points/", {"updated_since": "2020-01-01T00:00:00Z"})


def test_updated_since_lists_only_what_changed_from_the_audit_trail(world):
    a1, a2 = world.sites["A1"], world.sites["A2"]
    client = token_client(world.users[Role.DATA_MANAGER])
    mark = timezone.now()
    assert client.get("/api/v1/data-points/", {"updated_since": mark.isoformat()}).json()["count"] == 0

    token_client(world.users[Role.SITE_COORDINATOR]).patch(
        f"/api/v1/data-points/{a1.data_point.pk}/", {"raw_value": "125", "reason": "source"}, format="json")
    client.post(f"/api/v1/queries/{a2.query.pk}/cancel/", {"reason": "raised in error"}, format="json")

    points = client.get("/api/v1/data-points/", {"updated_since": mark.isoformat()}).json()["results"]
    queries = client.get("/api/v1/queries/", {"updated_since": mark.isoformat()}).json()["results"]
    assert [p["id"] for p in points] == [a1.data_point.pk]
    assert [q["id"] for q in queries] == [a2.query.pk]
    assert client.get("/api/v1/subjects/", {"updated_since": mark.isoformat()}).json()["count"] == 0


def test_bulk_actions_answer_per_item_and_apply_each_on_its_own(world):
    a1, a2 = world.sites["A1"], world.sites["A2"]
    other_study = world.sites["B1"].query
    a2.query.state = Query.State.CLOSED
    a2.query.save_without_historical_record()
    client = token_client(world.users[Role.DATA_MANAGER])

    response = client.post("/api/v1/queries/bulk-actions/", {
        "action": "cancel", "reason": "raised in error", "ids": [a1.query.pk, a2.query.pk, other_study.pk]},
        format="json")

    assert response.status_code == 200
    body = response.json()
    rows = {row["id"]: row for row in body["results"]}
    assert (body["applied"], body["refused"]) == (1, 2)
    assert (rows[a1.query.pk]["status"], rows[a1.query.pk]["query"]["state"]) == ("applied", "cancelled")
    assert (rows[a2.query.pk]["status"], rows[a2.query.pk]["code"]) == ("refused", 400)
    assert rows[a2.query.pk]["reasons"]
    assert (rows[other_study.pk]["status"], rows[other_study.pk]["query"]) == ("not_found", None)
    assert Query.objects.get(pk=a1.query.pk).state == "cancelled"
    assert Query.objects.get(pk=a2.query.pk).state == "closed"
    assert Query.objects.get(pk=other_study.pk).state == "open"


def test_atomic_bulk_actions_apply_nothing_when_one_row_is_refused(world):
    a1, a2 = world.sites["A1"], world.sites["A2"]
    a2.query.state = Query.State.CLOSED
    a2.query.save_without_historical_record()
    history = Query.history.filter(id=a1.query.pk).count()

    response = token_client(world.users[Role.DATA_MANAGER]).post("/api/v1/queries/bulk-actions/", {
        "action": "cancel", "reason": "raised in error", "ids": [a1.query.pk, a2.query.pk], "atomic": True},
        format="json")

    body = response.json()
    assert response.status_code == 200 and body["applied"] == 0
    assert {row["id"]: row["status"] for row in body["results"]} == {a1.query.pk: "not_applied",
                                                                      a2.query.pk: "refused"}
    assert Query.objects.get(pk=a1.query.pk).state == "open"
    assert Query.history.filter(id=a1.query.pk).count() == history
