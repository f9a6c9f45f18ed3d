"""In-app notifications (written by the SLA sweep): each user reads and marks only their own,
in the API and on the notifications page."""

import pytest
from rest_framework.test import APIClient

from queries.models import Notification
from studies.models import Role
from tests.scoping import build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    world = build_world()
    query = world.sites["A1"].query
    site_user, cra = world.users[Role.SITE_COORDINATOR], world.users[Role.CRA]
    world.mine = [Notification.objects.create(user=site_user, query=query, kind="sla.reminder",
                                              text=f"Reminder {n}: a query is due") for n in range(2)]
    world.theirs = Notification.objects.create(user=cra, query=query, kind="sla.escalation:cra",
                                               text="Escalated to you")
    return world


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_user_lists_only_their_own_notifications_and_filters_the_unread(world):
    client = api(world.users[Role.SITE_COORDINATOR])
    world.mine[0].read_at = world.mine[0].created_at
    world.mine[0].save()

    listed = client.get("/api/v1/notifications/").json()["results"]
    unread = client.get("/api/v1/notifications/", {"unread": "true"}).json()["results"]

    assert {n["id"] for n in listed} == {n.pk for n in world.mine}
    assert [n["id"] for n in unread] == [world.mine[1].pk]
    assert unread[0]["query_url"] == f"/queries/{world.sites['A1'].query.pk}/"
    assert client.get(f"/api/v1/notifications/{world.theirs.pk}/").status_code == 404


def test_marking_read_touches_only_the_callers_rows(world):
    client = api(world.users[Role.SITE_COORDINATOR])

    response = client.post("/api/v1/notifications/read/", {"ids": [n.pk for n in world.mine] + [world.theirs.pk]},
                           format="json")

    assert response.status_code == 200
    assert response.json() == {"marked_read": 2, "results": [
        *({"id": n.pk, "status": "marked_read"} for n in sorted(world.mine, key=lambda n: n.pk)),
        {"id": world.theirs.pk, "status": "not_found"}]}
    assert all(n.read_at for n in Notification.objects.filter(pk__in=[n.pk for n in world.mine]))
    world.theirs.refresh_from_db()
    assert world.theirs.read_at is None
    assert client.post("/api/v1/notifications/read/", {"ids": []}, format="json").status_code == 400


def test_the_notifications_page_lists_and_marks_all_read(world, client):
    client.force_login(world.users[Role.SITE_COORDINATOR])
    page = client.get("/notifications/")
    assert page.status_code == 200 and b"Reminder 0" in page.content and b"Escalated to you" not in page.content
    assert b"2 unread" in page.content

    client.post("/notifications/")

    assert not Notification.objects.filter(user=world.users[Role.SITE_COORDINATOR], read_at__isnull=True).exists()
    assert Notification.objects.filter(pk=world.theirs.pk, read_at__isnull=True).exists()
    client.logout()
    assert client.get("/notifications/").status_code == 302  # to the login page
