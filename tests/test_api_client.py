"""What an EDC integration does, through the typed client `make client` generates from the
committed schema (docs/openapi.yaml), against a live server: log in, pull subjects and data
points incrementally, raise a query twice with one Idempotency-Key, answer it as the site, read
its state (issue 24, section 4)."""

import sys
from pathlib import Path

import pytest
from django.utils import timezone

from queries.models import Query
from studies.models import DataPoint, Role
from tests.conftest import skip_or_fail
from tests.scoping import build_world

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_DIR = Path(__file__).resolve().parent.parent / "build" / "client"


@pytest.fixture
def api_client_package():
    if not (CLIENT_DIR / "trialops_client" / ".generated").exists():
        skip_or_fail(f"the generated client is missing from {CLIENT_DIR}: run `make client`",
                     required_by="TRIALOPS_REQUIRE_SERVICES")
    sys.path.insert(0, str(CLIENT_DIR))
    try:
        import trialops_client

        yield trialops_client
    finally:
        sys.path.remove(str(CLIENT_DIR))


def _login(base_url: str, username: str):
    from trialops_client import AuthenticatedClient, Client
    from trialops_client.api.auth import v1_auth_token_create
    from trialops_client.models import TokenObtainPairRequest

    tokens = v1_auth_token_create.sync(client=Client(base_url=base_url),
                                       body=TokenObtainPairRequest(username=username, password="pw-integration"))
    return AuthenticatedClient(base_url=base_url, token=tokens.access)


def test_an_edc_integration_pulls_incrementally_raises_once_and_reads_the_answer(live_server, api_client_package):
    from trialops_client.api.data_points import (
        v1_data_points_list,
        v1_data_points_partial_update,
        v1_data_points_retrieve,
    )
    from trialops_client.api.queries import v1_queries_answer_create, v1_queries_create, v1_queries_retrieve
    from trialops_client.api.subjects import v1_subjects_list
    from trialops_client.models import (
        PatchedDataPointChangeRequest,
        QueryCreateRequest,
        QueryTransitionRequest,
        StateEnum,
    )

    world = build_world()
    for role in (Role.DATA_MANAGER, Role.SITE_COORDINATOR):
        world.users[role].set_password("pw-integration")
        world.users[role].save()
    study, a1 = world.studies["A"], world.sites["A1"]
    dm = _login(live_server.url, "dm_a")
    site = _login(live_server.url, "sc_a1")

    # A first full pull, then a watermark.
    watermark = timezone.now()
    subjects = v1_subjects_list.sync(client=dm, study=study.pk)
    points = v1_data_points_list.sync(client=dm, study=study.pk)
    assert (subjects.count, points.count) == (2, 2)
    assert {s.subject_id for s in subjects.results} == {"SUBJ-A1", "SUBJ-A2"}

    # The site corrects one value, based on the version it read (If-Match).
    read = v1_data_points_retrieve.sync_detailed(a1.data_point.pk, client=site)
    changed = v1_data_points_partial_update.sync_detailed(
        a1.data_point.pk, client=site, if_match=read.headers["ETag"],
        body=PatchedDataPointChangeRequest(raw_value="128", reason="transcription error, source says 128"))
    assert changed.status_code == 200 and changed.parsed.version == read.parsed.version + 1

    # The incremental pull sees that value and nothing else.
    delta = v1_data_points_list.sync(client=dm, study=study.pk, updated_since=watermark)
    assert [(p.id, p.raw_value) for p in delta.results] == [(a1.data_point.pk, "128")]
    assert v1_subjects_list.sync(client=dm, study=study.pk, updated_since=watermark).count == 0

    # The EDC raises a query and, unsure it got through, sends it again with the same key.
    text = (f"{a1.data_point.item.label} ({a1.data_point.item.oid}) at {a1.visit.definition.name}: the value "
            f"recorded is 128 {a1.data_point.item.units}. Please verify it against the source document.")
    raised = [v1_queries_create.sync_detailed(client=dm, idempotency_key="edc-raise-0001",
                                              body=QueryCreateRequest(data_point=a1.data_point.pk, text=text))
              for _ in range(2)]
    assert [r.status_code for r in raised] == [201, 201]
    assert raised[0].parsed.id == raised[1].parsed.id and raised[1].headers["Idempotent-Replayed"] == "true"
    query_id = raised[0].parsed.id
    assert Query.objects.filter(data_point=a1.data_point, text=text).count() == 1

    # The site answers; the EDC reads the state.
    answered = v1_queries_answer_create.sync(query_id, client=site,
                                             body=QueryTransitionRequest(text="Value confirmed against source."))
    assert answered.state == StateEnum.ANSWERED
    assert v1_queries_retrieve.sync(query_id, client=dm).state == StateEnum.ANSWERED

    stored = Query.objects.get(pk=query_id)
    assert stored.state == "answered" and stored.answered_at is not None
    assert [(h.history_user.username, h.state) for h in stored.history.order_by("history_id")] == [
        ("dm_a", "open"), ("sc_a1", "answered")]
    assert DataPoint.history.filter(id=a1.data_point.pk).latest("history_id").history_user.username == "sc_a1"
