"""Every role x every site of two studies: list, read and change, through the API.

A user outside a site's scope gets 404 (never 403, never the data): the existence of another
site's subject is itself confidential."""

import pytest
from rest_framework.test import APIClient

from studies.models import DataPoint, Role
from tests.scoping import CAN_CHANGE_DATA, EXPECTED_SITES, build_world

ALL_SITES = ("A1", "A2", "B1", "B2")
ENDPOINTS = {
    # endpoint -> how to find the object of a site in the world
    "sites": lambda s: s.site,
    "subjects": lambda s: s.subject,
    "visits": lambda s: s.visit,
    "data-points": lambda s: s.data_point,
    "queries": lambda s: s.query,
    "deviations": lambda s: s.deviation,
}


@pytest.fixture
def world(db):
    return build_world()


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_list_shows_exactly_the_sites_in_scope(world, role, endpoint):
    client = client_for(world.users[role])
    expected = {ENDPOINTS[endpoint](world.sites[key]).pk for key in EXPECTED_SITES[role]}
    assert ids(client.get(f"/api/v1/{endpoint}/?page_size=500")) == expected


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("site_key", ALL_SITES)
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_detail_is_readable_in_scope_and_404_outside(world, role, site_key, endpoint):
    obj = ENDPOINTS[endpoint](world.sites[site_key])
    response = client_for(world.users[role]).get(f"/api/v1/{endpoint}/{obj.pk}/")
    if site_key in EXPECTED_SITES[role]:
        assert response.status_code == 200
        assert response.json()["id"] == obj.pk
    else:
        assert response.status_code == 404
        assert response.json() == {"message": "Not found.", "extra": {}}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("site_key", ALL_SITES)
def test_data_point_history_follows_the_same_scope(world, role, site_key):
    data_point = world.sites[site_key].data_point
    response = client_for(world.users[role]).get(f"/api/v1/data-points/{data_point.pk}/history/")
    assert response.status_code == (200 if site_key in EXPECTED_SITES[role] else 404)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("site_key", ALL_SITES)
def test_only_site_staff_change_data_and_only_at_their_site(world, role, site_key):
    data_point = world.sites[site_key].data_point
    history_before = data_point.history.count()
    response = client_for(world.users[role]).patch(
        f"/api/v1/data-points/{data_point.pk}/", {"raw_value": "121", "reason": "Transcription error"}, format="json"
    )
    data_point.refresh_from_db()
    if site_key not in EXPECTED_SITES[role]:
        assert response.status_code == 404  # no hint that the data point exists
    elif role not in CAN_CHANGE_DATA:
        assert response.status_code == 403
        assert response.json()["message"] == "Your role may not change data at this site."
    else:
        assert response.status_code == 200
        assert data_point.raw_value == "121"
        assert data_point.history.count() == history_before + 1
        return
    assert data_point.raw_value == "120"
    assert data_point.history.count() == history_before


@pytest.mark.parametrize("role", list(Role))
def test_studies_list_only_memberships(world, role):
    studies = ids(client_for(world.users[role]).get("/api/v1/studies/"))
    assert studies == {world.studies["A"].pk}
    assert client_for(world.users[role]).get(f"/api/v1/studies/{world.studies['B'].pk}/").status_code == 404


@pytest.mark.parametrize("endpoint", ["forms", "items"])
def test_metadata_of_another_study_is_invisible(world, endpoint):
    client = client_for(world.users[Role.SITE_COORDINATOR])
    rows = client.get(f"/api/v1/{endpoint}/").json()["results"]
    assert {row["study"] for row in rows} == {world.studies["A"].pk}


def test_a_revoked_membership_loses_access(world):
    user = world.users[Role.DATA_MANAGER]
    membership = user.memberships.get()
    membership.is_active = False
    membership.save()
    assert ids(client_for(user).get("/api/v1/subjects/")) == set()


def test_a_cra_without_grants_sees_no_site(world):
    from guardian.shortcuts import remove_perm

    cra = world.users[Role.CRA]
    remove_perm("studies.monitor_site", cra, world.sites["A1"].site)
    assert ids(client_for(cra).get("/api/v1/data-points/")) == set()


def test_a_grant_in_another_study_is_ignored_without_a_membership_there(world):
    from guardian.shortcuts import assign_perm

    cra = world.users[Role.CRA]
    assign_perm("studies.monitor_site", cra, world.sites["B1"].site)  # no CRA membership in study B
    assert ids(client_for(cra).get("/api/v1/sites/")) == {world.sites["A1"].site.pk}


def test_anonymous_requests_are_refused(world):
    response = APIClient().get("/api/v1/data-points/")
    assert response.status_code in (401, 403)
    assert "message" in response.json()
    assert DataPoint.objects.count() == 4


FOREIGN_FILTERS = {
    # endpoint -> {filter parameter: how to find the referenced object of a site}
    "subjects": {"study": lambda s: s.site.study, "site": lambda s: s.site},
    "visits": {"study": lambda s: s.site.study, "subject": lambda s: s.subject, "site": lambda s: s.site},
    "data-points": {"study": lambda s: s.site.study, "subject": lambda s: s.subject, "visit": lambda s: s.visit,
                    "site": lambda s: s.site},
    "queries": {"subject": lambda s: s.subject, "data_point": lambda s: s.data_point, "site": lambda s: s.site},
    "deviations": {"subject": lambda s: s.subject, "site": lambda s: s.site},
}


@pytest.mark.parametrize("endpoint", list(FOREIGN_FILTERS))
def test_filtering_on_another_sites_ids_answers_like_a_missing_id(world, endpoint):
    """An id from outside the scope and an id that does not exist must be indistinguishable."""
    client = client_for(world.users[Role.SITE_COORDINATOR])
    for parameter, referenced in FOREIGN_FILTERS[endpoint].items():
        outside = world.sites["B1" if parameter == "study" else "A2"]  # A2 shares the user's study
        foreign = client.get(f"/api/v1/{endpoint}/", {parameter: referenced(outside).pk})
        missing = client.get(f"/api/v1/{endpoint}/", {parameter: 987654321})
        assert (foreign.status_code, foreign.json()) == (missing.status_code, missing.json()) == (
            200, {"count": 0, "next": None, "previous": None, "results": []}), parameter
        own = client.get(f"/api/v1/{endpoint}/", {parameter: referenced(world.sites["A1"]).pk})
        assert own.json()["count"] >= 1, parameter
