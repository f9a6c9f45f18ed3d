"""How the studies app plugs into the agents framework (agents imports no domain app): it tells the
orchestrator a study's sites (fan_out: sites), and a successful import starts the workflows that
declare `on_import`, after the import is committed."""

import pytest
from django.apps import apps

from agents.models import AgentRun, Status
from agents.orchestrator import study_sites_provider_set, workflow_start
from agents.services import workflow_definition_save
from agents.worker import run_wait
from studies.ingest.base import ImportFailed, import_create, import_execute
from studies.models import Import
from tests.factories import SiteFactory, StudyFactory, UserFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TIMEOUT = 30
ON_IMPORT = "name: test_after_import\nversion: 1\ntriggers: [on_import]\nsteps: [{key: check, agent: ping}]\n"


@pytest.fixture(autouse=True)
def studies_wiring():
    # What Django's start-up did; tests of the orchestrator reset the sites hook to None afterwards.
    apps.get_app_config("studies").ready()
    yield
    apps.get_app_config("studies").ready()


def import_into(study, *, fail: bool = False) -> Import:
    actor = UserFactory(username="importer")
    record = import_create(source=Import.Source.ODM, actor=actor, study=study)

    def load(run):
        if fail:
            raise ImportFailed("Unknown OID I.NOPE", where="line 3")

    return import_execute(record=record, actor=actor, load=load)


def test_a_step_fans_out_to_one_step_per_site_of_the_study(worker):
    study = StudyFactory()
    sites = [SiteFactory(study=study) for _ in range(3)]
    SiteFactory()  # a site of another study
    workflow_definition_save(
        source="name: test_per_site\nversion: 1\nsteps:\n"
        "  - {key: plan, agent: ping}\n"
        "  - {key: verify, agent: ping, after: [plan], fan_out: sites}\n"
    )

    run = run_wait(run_id=workflow_start(name="test_per_site", study_id=study.pk).pk, timeout=TIMEOUT)

    assert run.status == Status.SUCCEEDED, run.error
    assert run.steps_total == run.steps_done == 4
    fanned = run.steps.filter(key__startswith="verify@").order_by("id")
    assert [(step.key, step.input["site_id"]) for step in fanned] == [
        (f"verify@{site.pk}", site.pk) for site in sorted(sites, key=lambda s: s.pk)
    ]


def test_a_successful_import_starts_the_workflows_declaring_on_import(worker):
    workflow_definition_save(source=ON_IMPORT)
    study = StudyFactory()

    record = import_into(study)

    assert record.status == Import.Status.SUCCEEDED
    run = AgentRun.objects.get(workflow="test_after_import")
    assert (run.study_id, run.trigger, run.triggered_by) == (study.pk, AgentRun.Trigger.IMPORT, None)
    assert run_wait(run_id=run.pk, timeout=TIMEOUT).status == Status.SUCCEEDED
    # A workflow without the on_import trigger is not started (nor, in tests, the built-in ones).
    assert not AgentRun.objects.exclude(workflow="test_after_import").exists()


def test_an_import_starts_the_built_in_data_review_and_risk_review(worker, settings):
    settings.BUILTIN_WORKFLOWS_ON_IMPORT = True
    study = StudyFactory()
    SiteFactory(study=study)

    record = import_into(study)

    assert record.status == Import.Status.SUCCEEDED
    started = {run.workflow: run for run in AgentRun.objects.filter(study_id=study.pk)}
    assert set(started) == {"data_review", "risk_review"}
    for run in started.values():
        assert run_wait(run_id=run.pk, timeout=TIMEOUT * 4).status == Status.SUCCEEDED, run.error


def test_a_failed_import_starts_nothing(worker):
    workflow_definition_save(source=ON_IMPORT)

    record = import_into(StudyFactory(), fail=True)

    assert record.status == Import.Status.FAILED
    assert not AgentRun.objects.exists()


def test_a_workflow_that_cannot_start_does_not_fail_the_import(worker):
    workflow_definition_save(
        source="name: test_broken_after_import\nversion: 1\ntriggers: [on_import]\n"
        "steps: [{key: each, agent: ping, fan_out: sites}]\n"
    )
    study_sites_provider_set(lambda study_id: 1 / 0)  # the hook itself breaks

    record = import_into(StudyFactory())

    record.refresh_from_db()
    assert (record.status, record.errors) == (Import.Status.SUCCEEDED, [])
    assert not AgentRun.objects.exists()
