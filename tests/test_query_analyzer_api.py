"""Discrepancies and edit checks over the API and in the UI: the contract's fields and filters,
scope by role and site, writes with a reason (audited, versioned), refusals with the reason, and
the QueryAnalyzer run by the data_review workflow on a real worker."""

import time
from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from agents.models import FINISHED, AgentRun, Status
from queries.checks.engine import analyzer_pass
from queries.models import Discrepancy, EditCheck
from queries.services import edit_check_save
from studies.audit import system_account
from studies.models import Role
from tests.scoping import ROLE_USERS, build_world

READERS_SITES = {Role.SPONSOR: {"A-101", "A-202"}, Role.DATA_MANAGER: {"A-101", "A-202"},
                 Role.AUDITOR: {"A-101", "A-202"}, Role.MEDICAL_MONITOR: {"A-101", "A-202"}, Role.CRA: {"A-101"},
                 Role.SITE_COORDINATOR: set(), Role.INVESTIGATOR: set()}


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _analyzed_world():
    world = build_world()
    actor = system_account("agent.QueryAnalyzer")
    for study in world.studies.values():
        item = world.sites[f"{study.protocol_id[-1]}1"].data_point.item
        edit_check_save(check=EditCheck(study=study, code="HIGH", name="at most 100", rule_type="range", item=item,
                                        params={"high": 100}), actor=actor, reason="test")
        analyzer_pass(study=study, actor=actor)
    return world


@pytest.fixture
def world(db):
    return _analyzed_world()


@pytest.mark.parametrize("role", list(ROLE_USERS))
def test_discrepancies_are_listed_for_the_study_team_within_their_sites(world, role):
    study = world.studies["A"]
    response = client_for(world.users[role]).get("/api/v1/discrepancies/", {"study": study.pk})
    assert response.status_code == 200
    assert {row["site"] for row in response.json()["results"]} == READERS_SITES[role]


def test_a_discrepancy_has_the_contract_fields(world):
    response = client_for(world.users[Role.DATA_MANAGER]).get(
        "/api/v1/discrepancies/", {"study": world.studies["A"].pk, "site": "A-101"})
    (row,) = response.json()["results"]
    a1 = world.sites["A1"]
    assert {k: row[k] for k in ("subject", "site", "visit", "item", "value", "rule", "rule_type", "severity",
                                "category", "held_back", "status")} == {
        "subject": "SUBJ-A1", "site": "A-101", "visit": a1.visit.definition.oid, "item": a1.data_point.item.oid,
        "value": "120 mmHg" if a1.data_point.units else "120", "rule": "HIGH", "rule_type": "range",
        "severity": "major", "category": "range", "held_back": False, "status": "open"}
    assert 0 <= row["confidence"] <= 1 and row["query"] is not None and row["id"]


@pytest.mark.parametrize(("params", "count"), [
    ({"rule_type": "range"}, 2), ({"rule_type": "required"}, 0), ({"severity": "major"}, 2),
    ({"held_back": "true"}, 0), ({"held_back": "false"}, 2), ({"subject": "SUBJ-A2"}, 1), ({"status": "resolved"}, 0),
    ({"category": "missing"}, 0),
])
def test_discrepancy_filters(world, params, count):
    response = client_for(world.users[Role.DATA_MANAGER]).get(
        "/api/v1/discrepancies/", {"study": world.studies["A"].pk, **params})
    assert response.json()["count"] == count


def test_another_studys_discrepancy_is_a_404(world):
    other = Discrepancy.objects.filter(study=world.studies["B"]).first()
    assert other is not None
    response = client_for(world.users[Role.DATA_MANAGER]).get(f"/api/v1/discrepancies/{other.pk}/")
    assert response.status_code == 404


def test_a_data_manager_writes_a_rule_with_a_reason_and_it_is_versioned(world):
    study = world.studies["A"]
    client = client_for(world.users[Role.DATA_MANAGER])
    item = world.sites["A1"].data_point.item
    created = client.post("/api/v1/edit-checks/", {
        "study": study.pk, "code": "LOW", "name": "at least 130", "rule_type": "range", "item": item.oid,
        "params": {"low": 130, "kind": "soft"}, "reason": "protocol amendment 2"}, format="json")
    assert created.status_code == 201, created.json()
    check = EditCheck.objects.get(study=study, code="LOW")
    assert (check.version, check.source, check.params["kind"]) == (1, "manual", "soft")

    changed = client.patch(f"/api/v1/edit-checks/{check.pk}/", {"params": {"low": 125, "kind": "soft"},
                                                                 "reason": "tightened"}, format="json")
    assert changed.status_code == 200 and changed.json()["version"] == 2
    newest = check.history.first()
    assert (newest.history_user, newest.history_change_reason, newest.version) == (
        world.users[Role.DATA_MANAGER], "tightened", 2)


def test_an_invalid_rule_is_refused_with_its_reason_and_nothing_is_stored(world):
    client = client_for(world.users[Role.DATA_MANAGER])
    response = client.post("/api/v1/edit-checks/", {
        "study": world.studies["A"].pk, "code": "BAD", "name": "bad", "rule_type": "expression",
        "item": world.sites["A1"].data_point.item.oid, "params": {"expression": "open('x')"},
        "reason": "try"}, format="json")
    assert response.status_code == 400
    assert "Bad expression" in str(response.json()["extra"]["params"])
    assert not EditCheck.objects.filter(code="BAD").exists()


def test_a_write_without_a_reason_is_refused(world):
    check = EditCheck.objects.get(study=world.studies["A"], code="HIGH")
    response = client_for(world.users[Role.DATA_MANAGER]).patch(
        f"/api/v1/edit-checks/{check.pk}/", {"active": False}, format="json")
    assert response.status_code == 400 and "reason" in response.json()["extra"]["fields"]
    check.refresh_from_db()
    assert check.active and check.version == 1


@pytest.mark.parametrize("role", [Role.CRA, Role.AUDITOR, Role.MEDICAL_MONITOR])
def test_only_data_managers_and_sponsors_change_rules(world, role):
    check = EditCheck.objects.get(study=world.studies["A"], code="HIGH")
    response = client_for(world.users[role]).patch(f"/api/v1/edit-checks/{check.pk}/",
                                                   {"active": False, "reason": "no"}, format="json")
    assert response.status_code == 403
    check.refresh_from_db()
    assert check.active


def test_statistics_per_site_and_rule(world):
    response = client_for(world.users[Role.DATA_MANAGER]).get("/api/v1/edit-checks/statistics/",
                                                              {"study": world.studies["A"].pk})
    rows = {(r["site"], r["rule"]): r for r in response.json()}
    assert rows[("A-101", "HIGH")]["queries"] == 1 and rows[("A-101", "HIGH")]["query_rate"] == 1.0
    assert rows[("A-101", "(manual: site)")]["queries"] == 1  # the world's hand-written query
    assert {site for site, _ in rows} == {"A-101", "A-202"}
    cra = client_for(world.users[Role.CRA]).get("/api/v1/edit-checks/statistics/", {"study": world.studies["A"].pk})
    assert cra.status_code == 200, cra.json()
    assert {r["site"] for r in cra.json()} == {"A-101"}  # a CRA sees the history of their own sites


def test_the_pages_show_the_findings_and_the_catalogue(world, client):
    client.force_login(world.users[Role.DATA_MANAGER])
    study = world.studies["A"]
    page = client.get(f"/studies/{study.pk}/discrepancies/")
    assert page.status_code == 200 and b"SUBJ-A1" in page.content and b"SUBJ-B1" not in page.content
    catalogue = client.get(f"/studies/{study.pk}/edit-checks/")
    assert catalogue.status_code == 200 and b"HIGH" in catalogue.content
    client.force_login(world.users[Role.CRA])  # their own site only
    page = client.get(f"/studies/{study.pk}/discrepancies/")
    assert page.status_code == 200 and b"SUBJ-A1" in page.content and b"SUBJ-A2" not in page.content
    client.force_login(world.users[Role.SITE_COORDINATOR])
    assert client.get(f"/studies/{study.pk}/discrepancies/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_data_manager_runs_the_analyzer_through_its_workflow_on_a_worker(worker):
    world = build_world()
    study = world.studies["A"]
    item = world.sites["A1"].data_point.item
    edit_check_save(check=EditCheck(study=study, code="HIGH", name="at most 100", rule_type="range", item=item,
                                    params={"high": 100}), actor=world.users[Role.DATA_MANAGER], reason="test")

    response = client_for(world.users[Role.DATA_MANAGER]).post(f"/api/v1/discrepancies/run/?study={study.pk}")

    assert response.status_code == 202
    run = AgentRun.objects.get(pk=response.json()["run"])
    for _ in range(300):
        run.refresh_from_db()
        if run.status in FINISHED:
            break
        time.sleep(0.1)
    assert run.status == Status.SUCCEEDED, run.steps.values("error")
    assert Discrepancy.objects.filter(study=study, edit_check__code="HIGH").count() == 2
    step = run.steps.get(key="analyze")
    assert step.output["studies"][study.protocol_id]["counts"]["queries_raised"] == 2
    assert run.steps.get(key="generate").status == Status.SUCCEEDED  # the candidates' texts, re-read
    refused = client_for(world.users[Role.CRA]).post(f"/api/v1/discrepancies/run/?study={study.pk}")
    assert refused.status_code == 403  # a CRA reviews the findings of their sites, does not run the analyzer
    assert AgentRun.objects.filter(workflow="data_review").count() == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_run_agent_runs_the_query_analyzer_from_the_command_line():
    world = build_world()
    study = world.studies["A"]
    item = world.sites["A1"].data_point.item
    edit_check_save(check=EditCheck(study=study, code="HIGH", name="at most 100", rule_type="range", item=item,
                                    params={"high": 100}), actor=world.users[Role.DATA_MANAGER], reason="test")
    out = StringIO()

    call_command("run_agent", "QueryAnalyzer", "--study", str(study.pk), "--config", '{"full": true}', stdout=out)

    run = AgentRun.objects.get(workflow="agent.QueryAnalyzer")
    assert run.status == Status.SUCCEEDED and out.getvalue().splitlines()[-1].startswith(f"run {run.pk}: ")
    found = Discrepancy.objects.filter(study=study, edit_check__code="HIGH")
    assert found.count() == 2 and all(d.query_id for d in found)
    assert run.steps.get().output["studies"][study.protocol_id]["full"] is True


def test_the_study_page_links_the_review_pages_each_role_may_open(world, client):
    study = world.studies["A"]
    client.force_login(world.users[Role.DATA_MANAGER])
    page = client.get(f"/studies/{study.pk}/").content.decode()
    assert f"/studies/{study.pk}/discrepancies/" in page and f"/studies/{study.pk}/risk/" in page
    client.force_login(world.users[Role.SITE_COORDINATOR])
    page = client.get(f"/studies/{study.pk}/").content.decode()
    assert f"/studies/{study.pk}/discrepancies/" not in page and f"/studies/{study.pk}/risk/" not in page
    assert client.get(f"/studies/{study.pk}/risk/").status_code == 404
