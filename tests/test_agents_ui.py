"""Agent pages: the registry, a study's runs (start for data managers and sponsors), and a run page
that polls every 2 s while the run is active and stops polling once it is finished."""

import pytest
from django.urls import reverse
from django.utils import timezone

from agents.models import AgentRun, Status
from agents.orchestrator import workflow_start
from agents.worker import run_wait
from studies.models import Role
from studies.services import membership_grant
from tests.factories import UserFactory
from tests.scoping import build_world

POLLING = 'hx-trigger="every 2s"'


@pytest.fixture
def world(db):
    world = build_world()
    world.users["outsider"] = UserFactory(username="dm_b")
    membership_grant(user=world.users["outsider"], study=world.studies["B"], role=Role.DATA_MANAGER)
    return world


def logged_in(client, user):
    client.force_login(user)
    return client


def test_the_agents_page_lists_the_registry_with_health(client, world):
    response = logged_in(client, world.users[Role.INVESTIGATOR]).get(reverse("agent-list"))

    assert response.status_code == 200
    assert b'data-agent="ping"' in response.content
    assert b"Depth" in response.content and b"p50 / p95" in response.content
    assert b'href="/agents/"' in response.content  # the navigation link


def test_the_study_dashboard_links_to_its_runs(client, world):
    study = world.studies["A"]
    response = logged_in(client, world.users[Role.AUDITOR]).get(reverse("study-detail", args=[study.pk]))

    assert reverse("study-runs", args=[study.pk]).encode() in response.content


@pytest.mark.parametrize("role", [*Role, "outsider"])
def test_the_runs_page_offers_a_start_to_data_managers_and_sponsors_only(client, world, role):
    study = world.studies["A"]
    run = workflow_start(name="ping", study_id=study.pk)

    response = logged_in(client, world.users[role]).get(reverse("study-runs", args=[study.pk]))

    if role == "outsider":
        assert response.status_code == 404
        return
    assert response.status_code == 200
    assert reverse("workflow-run-detail", args=[run.pk]).encode() in response.content
    assert (b'name="workflow"' in response.content) == (role in (Role.DATA_MANAGER, Role.SPONSOR))
    if role in (Role.DATA_MANAGER, Role.SPONSOR):
        assert b'<option value="demo">demo v1</option>' in response.content


def test_a_data_manager_starts_a_workflow_from_the_runs_page(client, world):
    study = world.studies["A"]
    user = world.users[Role.DATA_MANAGER]

    response = logged_in(client, user).post(reverse("study-runs", args=[study.pk]), {"workflow": "demo"})

    run = AgentRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("workflow-run-detail", args=[run.pk])
    assert (run.workflow, run.study_id, run.triggered_by, run.steps_total) == ("demo", study.pk, user, 4)


def test_a_second_start_shows_why_it_was_refused(client, world):
    study = world.studies["A"]
    client = logged_in(client, world.users[Role.SPONSOR])
    client.post(reverse("study-runs", args=[study.pk]), {"workflow": "ping"})

    response = client.post(reverse("study-runs", args=[study.pk]), {"workflow": "ping"}, follow=True)

    assert b"already active on study" in response.content
    assert AgentRun.objects.count() == 1


def test_a_role_that_may_not_run_workflows_cannot_start_one(client, world):
    study = world.studies["A"]

    response = logged_in(client, world.users[Role.MEDICAL_MONITOR]).post(
        reverse("study-runs", args=[study.pk]), {"workflow": "ping"}
    )

    assert response.status_code == 403
    assert not AgentRun.objects.exists()


def test_an_active_run_page_polls_and_offers_cancel_to_a_data_manager(client, world):
    run = workflow_start(name="ping", study_id=world.studies["A"].pk)
    client = logged_in(client, world.users[Role.DATA_MANAGER])

    page = client.get(reverse("workflow-run-detail", args=[run.pk]))
    partial = client.get(reverse("workflow-run-detail", args=[run.pk]), headers={"HX-Request": "true"})

    assert page.status_code == partial.status_code == 200
    assert b"<html" in page.content and b"<html" not in partial.content
    assert POLLING.encode() in partial.content
    assert reverse("workflow-run-cancel", args=[run.pk]).encode() in partial.content
    assert partial.content.count(b"data-step=") == 4


def test_a_role_that_may_not_run_workflows_sees_no_buttons_and_cannot_cancel(client, world):
    run = workflow_start(name="ping", study_id=world.studies["A"].pk)
    client = logged_in(client, world.users[Role.CRA])

    page = client.get(reverse("workflow-run-detail", args=[run.pk]))
    response = client.post(reverse("workflow-run-cancel", args=[run.pk]))

    assert b"/cancel/" not in page.content
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == Status.PENDING


def test_a_run_of_another_study_is_a_404(client, world):
    run = workflow_start(name="ping", study_id=world.studies["B"].pk)
    client = logged_in(client, world.users[Role.DATA_MANAGER])

    assert client.get(reverse("workflow-run-detail", args=[run.pk])).status_code == 404
    assert client.post(reverse("workflow-run-cancel", args=[run.pk])).status_code == 404
    run.refresh_from_db()
    assert run.status == Status.PENDING


def test_a_sponsor_cancels_then_retries_a_run_from_its_page(client, world):
    run = workflow_start(name="ping", study_id=world.studies["A"].pk)
    client = logged_in(client, world.users[Role.SPONSOR])

    cancelled = client.post(reverse("workflow-run-cancel", args=[run.pk]), follow=True)
    run.refresh_from_db()
    assert run.status == Status.CANCELLED
    assert b"Run cancelled." in cancelled.content and POLLING.encode() not in cancelled.content
    assert reverse("workflow-run-retry", args=[run.pk]).encode() in cancelled.content

    client.post(reverse("workflow-run-retry", args=[run.pk]))
    run.refresh_from_db()
    assert (run.status, run.attempt) == (Status.RUNNING, 2)
    assert set(run.steps.values_list("status", flat=True)) == {Status.PENDING}


def test_a_failed_step_shows_its_error_and_attempts(client, world):
    run = workflow_start(name="ping", study_id=world.studies["A"].pk)
    AgentRun.objects.filter(pk=run.pk).update(status=Status.FAILED, finished_at=timezone.now(), error="step failed")
    run.steps.filter(key="start").update(status=Status.FAILED, attempts=3, error="RuntimeError: EDC is down",
                                         started_at=timezone.now(), finished_at=timezone.now())

    partial = logged_in(client, world.users[Role.AUDITOR]).get(
        reverse("workflow-run-detail", args=[run.pk]), headers={"HX-Request": "true"}
    )

    assert POLLING.encode() not in partial.content
    assert b"RuntimeError: EDC is down" in partial.content
    assert b'<td class="num">3</td>' in partial.content


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_run_page_stops_polling_once_the_run_has_finished(client, worker):
    world = build_world()
    client.force_login(world.users[Role.DATA_MANAGER])

    started = client.post(reverse("study-runs", args=[world.studies["A"].pk]), {"workflow": "ping"})
    run = AgentRun.objects.get()
    assert started.url == reverse("workflow-run-detail", args=[run.pk])
    assert run_wait(run_id=run.pk, timeout=30).status == Status.SUCCEEDED

    partial = client.get(started.url, headers={"HX-Request": "true"})

    assert POLLING.encode() not in partial.content and b"hx-get" not in partial.content
    assert b"4 of 4 steps" in partial.content and b"width: 100%" in partial.content
    assert partial.content.count(b"badge-success") == 5  # the run and its four steps
