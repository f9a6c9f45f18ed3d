"""API v1 contract: JWT for integrations, filters, pagination, one error shape, OpenAPI."""

import pytest
from rest_framework.test import APIClient

from studies.models import Role
from studies.services import membership_grant
from tests.factories import DataPointFactory, ItemDefinitionFactory, SubjectVisitFactory, UserFactory


@pytest.fixture
def dm(db):
    return UserFactory(username="dm_api")


@pytest.fixture
def points(dm):
    visit = SubjectVisitFactory()
    membership_grant(user=dm, study=visit.study, role=Role.DATA_MANAGER)
    items = [ItemDefinitionFactory(study=visit.study, oid=f"I.VS{n}") for n in range(3)]
    return [DataPointFactory(visit=visit, item=item, raw_value=str(100 + n)) for n, item in enumerate(items)]


def token_client(username: str, password: str = "pw-for-tests") -> APIClient:
    client = APIClient()
    response = client.post("/api/v1/auth/token/", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    assert set(response.json()) == {"access", "refresh"}
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    return client


def test_an_integration_reads_data_points_with_a_jwt(points):
    client = token_client("dm_api")
    body = client.get("/api/v1/data-points/").json()
    assert body["count"] == 3
    assert {row["item_oid"] for row in body["results"]} == {"I.VS0", "I.VS1", "I.VS2"}
    assert body["results"][0]["subject_id"] == points[0].subject.subject_id


def test_a_refresh_token_gives_a_new_access_token(points):
    client = APIClient()
    tokens = client.post("/api/v1/auth/token/", {"username": "dm_api", "password": "pw-for-tests"},
                         format="json").json()
    refreshed = client.post("/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 200 and "access" in refreshed.json()


def test_a_bad_token_is_refused_in_the_error_shape(points):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    response = client.get("/api/v1/data-points/")
    assert response.status_code == 401
    assert response.json()["message"] == "Given token not valid for any token type"
    assert "messages" in response.json()["extra"]


def test_filters_narrow_the_list(points):
    client = token_client("dm_api")
    body = client.get("/api/v1/data-points/", {"item_oid": "I.VS1"}).json()
    assert [row["raw_value"] for row in body["results"]] == ["101"]
    body = client.get("/api/v1/data-points/", {"subject": points[0].subject_id, "study": points[0].study_id}).json()
    assert body["count"] == 3


@pytest.mark.parametrize("params", [{"study": "abc"}, {"sdv_state": "nonsense"}, {"changed_since": "yesterday"}])
def test_a_bad_filter_answers_400_in_the_error_shape(points, params):
    response = token_client("dm_api").get("/api/v1/data-points/", params)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"message", "extra"}
    assert next(iter(params)) in body["extra"]["fields"]


def test_pagination_pages_and_caps(points):
    client = token_client("dm_api")
    first = client.get("/api/v1/data-points/", {"page_size": 2}).json()
    assert first["count"] == 3 and len(first["results"]) == 2 and first["next"]
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    beyond = client.get("/api/v1/data-points/", {"page": 9})
    assert beyond.status_code == 404 and beyond.json()["message"] == "Invalid page."


def test_an_unknown_id_answers_404_in_the_error_shape(points):
    response = token_client("dm_api").get("/api/v1/subjects/999999/")
    assert response.status_code == 404
    assert response.json() == {"message": "Not found.", "extra": {}}


def test_writes_to_read_only_endpoints_are_refused(points):
    response = token_client("dm_api").post("/api/v1/subjects/", {"subject_id": "X"}, format="json")
    assert response.status_code == 405
    assert set(response.json()) == {"message", "extra"}


def test_put_is_not_offered_on_data_points(points):
    response = token_client("dm_api").put(f"/api/v1/data-points/{points[0].pk}/", {"raw_value": "1"}, format="json")
    assert response.status_code == 405


def test_the_openapi_schema_and_docs_are_served_without_a_cdn(db, client):
    UserFactory(username="reader")
    client.login(username="reader", password="pw-for-tests")
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/v1/data-points/{id}/history/", "/api/v1/studies/", "/api/v1/auth/token/",
                 "/api/v1/queries/", "/api/v1/deviations/"):
        assert path in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr" not in html and "unpkg" not in html


def test_the_schema_and_docs_need_an_account(db, client):
    assert client.get("/api/schema/").status_code in (401, 403)
    assert client.get("/api/docs/").status_code in (401, 403)
