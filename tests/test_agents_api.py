"""/api/v1/agents/ and /api/v1/workflow-runs/ for every role of the access world (tests/scoping.py):
runs are scoped by the user's studies (404 outside), and only data managers and sponsors start,
cancel, retry and roll back runs (403 for the other roles of the study)."""

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import AgentRun, AgentStep, Status
from agents.orchestrator import workflow_start
from agents.services import agent_config_set
from agents.worker import run_wait
from studies.models import Role
from studies.services import membership_grant
from tests.factories import UserFactory
from tests.scoping import build_world

RUNNERS = {Role.DATA_MANAGER, Role.SPONSOR}


@pytest.fixture
def world(db):
    world = build_world()
    # A data manager of study B: everything of study A is out of their scope.
    world.users["outsider"] = UserFactory(username="dm_b")
    membership_grant(user=world.users["outsider"], study=world.studies["B"], role=Role.DATA_MANAGER)
    world.users["superuser"] = UserFactory(username="root", is_superuser=True, is_staff=True)
    return world


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def ping_run(world, study_key="A", **fields) -> AgentRun:
    """A run of the built-in ping workflow (4 steps). Outside a transaction=True test its canvas is
    never enqueued (on_commit does not fire), so it stays pending unless the test changes it."""
    run = workflow_start(name="ping", study_id=world.studies[study_key].pk if study_key else None)
    if fields:
        AgentRun.objects.filter(pk=run.pk).update(**fields)
        run.refresh_from_db()
    return run


def failed_ping_run(world) -> AgentRun:
    run = ping_run(world, status=Status.FAILED, finished_at=timezone.now(), error="step start failed")
    run.steps.filter(key="start").update(status=Status.FAILED, attempts=1, error="boom")
    return run


# --- Registry -------------------------------------------------------------------------------------
def test_the_registry_lists_every_agent_with_its_health(world):
    response = client_for(world.users[Role.SITE_COORDINATOR]).get("/api/v1/agents/")

    assert response.status_code == 200
    rows = {row["name"]: row for row in response.json()["results"]}
    ping = rows["ping"]
    assert (ping["version"], ping["queue"]) == ("1", "default")
    assert ping["description"].startswith("Answers pong")
    assert isinstance(ping["config_schema"], dict)
    assert {"runs", "failure_rate", "p50_ms", "p95_ms", "queue_depth", "last_heartbeat_at"} <= set(ping["health"])
    assert "enabled" not in ping  # only with a study


def test_the_registry_of_a_study_adds_its_config_and_enabled_flag(world):
    client = client_for(world.users[Role.AUDITOR])
    agent_config_set(agent="ping", study_id=world.studies["B"].pk, config={}, enabled=False,
                     actor=world.users["outsider"])

    response = client.get("/api/v1/agents/", {"study": world.studies["A"].pk})

    assert response.status_code == 200
    ping = {row["name"]: row for row in response.json()["results"]}["ping"]
    assert (ping["enabled"], ping["config"]) == (True, {})  # no row for study A: the default
    paused = client_for(world.users["outsider"]).get("/api/v1/agents/", {"study": world.studies["B"].pk})
    assert {row["name"]: row for row in paused.json()["results"]}["ping"]["enabled"] is False
    outside = client.get("/api/v1/agents/", {"study": world.studies["B"].pk})
    assert (outside.status_code, outside.json()) == (404, {"message": "Not found.", "extra": {}})


def test_the_registry_refuses_anonymous_requests(world):
    response = APIClient().get("/api/v1/agents/")

    assert response.status_code == 401
    assert set(response.json()) == {"message", "extra"}


# --- Reading runs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("role", [*Role, "outsider", "superuser"])
def test_runs_are_listed_for_the_studies_in_scope_only(world, role):
    run_a, run_b, no_study = ping_run(world, "A"), ping_run(world, "B"), ping_run(world, None)

    response = client_for(world.users[role]).get("/api/v1/workflow-runs/")

    assert response.status_code == 200
    listed = {row["id"] for row in response.json()["results"]}
    expected = {"outsider": {run_b.pk}, "superuser": {run_a.pk, run_b.pk, no_study.pk}}.get(role, {run_a.pk})
    assert listed == expected


def test_a_run_in_the_list_shows_its_definition_progress_and_trigger(world):
    run = ping_run(world, steps_done=1)
    client = client_for(world.users[Role.DATA_MANAGER])

    rows = client.get("/api/v1/workflow-runs/", {"study": world.studies["A"].pk}).json()["results"]

    assert rows == [{
        "id": run.pk, "workflow": "ping", "definition": {"name": "ping", "version": 1},
        "study": world.studies["A"].pk, "status": "pending", "attempt": 1,
        "progress": {"steps_done": 1, "steps_total": 4}, "trigger": "manual", "triggered_by": None,
        "created_at": rows[0]["created_at"], "started_at": None, "finished_at": None, "error": "",
    }]
    # Another study's id filters to nothing, exactly like an id that does not exist.
    assert client.get("/api/v1/workflow-runs/", {"study": world.studies["B"].pk}).json()["count"] == 0


@pytest.mark.parametrize("role", [*Role, "outsider"])
def test_a_run_detail_is_readable_in_scope_and_404_outside(world, role):
    run_a, run_b, no_study = ping_run(world, "A"), ping_run(world, "B"), ping_run(world, None)
    client = client_for(world.users[role])

    own, other = (run_b, run_a) if role == "outsider" else (run_a, run_b)
    response = client.get(f"/api/v1/workflow-runs/{own.pk}/")
    assert response.status_code == 200
    steps = response.json()["steps"]
    assert [(s["key"], s["agent"], s["status"], s["attempts"], s["duration_ms"]) for s in steps] == [
        ("start", "ping", "pending", 0, None), ("ping_a", "ping", "pending", 0, None),
        ("ping_b", "ping", "pending", 0, None), ("finish", "ping", "pending", 0, None),
    ]
    for hidden in (other, no_study):
        missing = client.get(f"/api/v1/workflow-runs/{hidden.pk}/")
        assert (missing.status_code, missing.json()) == (404, {"message": "Not found.", "extra": {}})


# --- Starting and changing runs -------------------------------------------------------------------
@pytest.mark.parametrize("role", [*Role, "outsider"])
def test_only_data_managers_and_sponsors_start_a_run(world, role):
    user = world.users[role]
    study = world.studies["A"]

    response = client_for(user).post("/api/v1/workflow-runs/", {"workflow": "ping", "study": study.pk}, format="json")

    runs = AgentRun.objects.filter(study_id=study.pk)
    if role == "outsider":
        assert (response.status_code, response.json()["message"]) == (404, "Not found.")
        assert not runs.exists()
    elif role not in RUNNERS:
        assert response.status_code == 403
        assert response.json()["message"].startswith("Only data managers and sponsors")
        assert not runs.exists()
    else:
        assert response.status_code == 201, response.content
        run = runs.get()
        assert response.json()["id"] == run.pk
        assert (run.workflow, run.status, run.trigger, run.triggered_by, run.steps_total) == (
            "ping", Status.PENDING, AgentRun.Trigger.MANUAL, user, 4)
        assert AgentStep.objects.filter(run=run).count() == 4
        assert len(response.json()["steps"]) == 4


def test_a_second_run_of_an_active_workflow_is_refused_with_409(world):
    client = client_for(world.users[Role.SPONSOR])
    study = world.studies["A"]
    first = client.post("/api/v1/workflow-runs/", {"workflow": "ping", "study": study.pk}, format="json")

    second = client.post("/api/v1/workflow-runs/", {"workflow": "ping", "study": study.pk}, format="json")

    assert second.status_code == 409
    assert second.json() == {
        "message": f"workflow ping is already active on study {study.pk}: run {first.json()['id']} (pending); "
                   "wait for it or cancel it",
        "extra": {"active_run": first.json()["id"]},
    }
    assert AgentRun.objects.filter(study_id=study.pk).count() == 1


def test_an_unknown_workflow_is_a_400(world):
    response = client_for(world.users[Role.DATA_MANAGER]).post(
        "/api/v1/workflow-runs/", {"workflow": "nope", "study": world.studies["A"].pk}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["message"].startswith("No workflow named 'nope'")
    assert "workflow" in response.json()["extra"]["fields"]
    assert not AgentRun.objects.exists()


def test_a_start_without_a_study_is_a_400(world):
    response = client_for(world.users[Role.DATA_MANAGER]).post("/api/v1/workflow-runs/", {"workflow": "ping"},
                                                               format="json")

    assert (response.status_code, response.json()["message"]) == (400, "study: This field is required.")


@pytest.mark.parametrize("role", [*Role, "outsider"])
def test_only_data_managers_and_sponsors_cancel_a_run(world, role):
    run = ping_run(world)

    response = client_for(world.users[role]).post(f"/api/v1/workflow-runs/{run.pk}/cancel/")

    run.refresh_from_db()
    statuses = set(run.steps.values_list("status", flat=True))
    if role in RUNNERS:
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        assert (run.status, statuses) == (Status.CANCELLED, {Status.CANCELLED})
    else:
        assert response.status_code == (404 if role == "outsider" else 403)
        assert (run.status, statuses) == (Status.PENDING, {Status.PENDING})


@pytest.mark.parametrize("role", [*Role, "outsider"])
def test_only_data_managers_and_sponsors_retry_a_failed_run(world, role):
    run = failed_ping_run(world)

    response = client_for(world.users[role]).post(f"/api/v1/workflow-runs/{run.pk}/retry/")

    run.refresh_from_db()
    start = run.steps.get(key="start")
    if role in RUNNERS:
        assert response.status_code == 200
        assert (run.status, run.attempt, run.error) == (Status.RUNNING, 2, "")
        assert (start.status, start.error) == (Status.PENDING, "")
    else:
        assert response.status_code == (404 if role == "outsider" else 403)
        assert (run.status, run.attempt, start.status) == (Status.FAILED, 1, Status.FAILED)


@pytest.mark.parametrize("role", [Role.SPONSOR, Role.AUDITOR, "outsider"])
def test_only_data_managers_and_sponsors_roll_back_a_run(world, role):
    run = failed_ping_run(world)  # ping declares no compensation: a rollback has nothing to undo

    response = client_for(world.users[role]).post(f"/api/v1/workflow-runs/{run.pk}/rollback/")

    run.refresh_from_db()
    if role in RUNNERS:
        assert (response.status_code, run.status) == (200, Status.COMPENSATED)
    else:
        assert response.status_code == (404 if role == "outsider" else 403)
        assert run.status == Status.FAILED


def test_cancelling_a_finished_run_is_a_409(world):
    run = ping_run(world, status=Status.SUCCEEDED, finished_at=timezone.now())

    response = client_for(world.users[Role.DATA_MANAGER]).post(f"/api/v1/workflow-runs/{run.pk}/cancel/")

    assert response.status_code == 409
    assert response.json() == {
        "message": f"run {run.pk} is succeeded; only a pending or running run can be cancelled",
        "extra": {"status": "succeeded"},
    }
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED


def test_runs_without_a_study_are_for_superusers_only(world):
    run = failed_ping_run(world)
    AgentRun.objects.filter(pk=run.pk).update(study_id=None)

    assert client_for(world.users[Role.SPONSOR]).post(f"/api/v1/workflow-runs/{run.pk}/retry/").status_code == 404
    response = client_for(world.users["superuser"]).post(f"/api/v1/workflow-runs/{run.pk}/retry/")

    assert response.status_code == 200
    run.refresh_from_db()
    assert (run.status, run.attempt) == (Status.RUNNING, 2)


# --- End to end on a real worker ------------------------------------------------------------------
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_run_started_through_the_api_runs_to_the_end_on_a_real_worker(worker):
    world = build_world()
    client = client_for(world.users[Role.DATA_MANAGER])

    started = client.post("/api/v1/workflow-runs/", {"workflow": "ping", "study": world.studies["A"].pk},
                          format="json")
    assert started.status_code == 201, started.content
    run = run_wait(run_id=started.json()["id"], timeout=30)

    assert run.status == Status.SUCCEEDED, run.error
    assert set(run.steps.values_list("status", flat=True)) == {Status.SUCCEEDED}
    detail = client.get(f"/api/v1/workflow-runs/{run.pk}/").json()
    assert (detail["status"], detail["progress"]) == ("succeeded", {"steps_done": 4, "steps_total": 4})
    assert detail["triggered_by"] == "dm_a" and detail["finished_at"] is not None
    assert all(step["attempts"] == 1 and step["duration_ms"] is not None for step in detail["steps"])
