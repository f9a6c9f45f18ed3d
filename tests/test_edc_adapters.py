"""Vendor EDC adapters against local fake servers speaking each vendor's protocol (tests/fakes):
Rave (RWS ODM via rwslib), REDCap (form-encoded API via PyCap), Veeva Vault CDMS (session + JSON
via httpx). Nothing of the adapters is patched; credentials never reach a log or an error."""

import logging
from datetime import UTC, datetime

import pytest
from lxml import etree

from studies.edc.base import EdcError, EdcNotSupported, OutboundQuery, adapter_for
from studies.edc.services import edc_connections_due, edc_sync
from studies.models import DataPoint, EdcConnection, Import, Subject
from tests.factories import StudyFactory
from tests.fakes import serve
from tests.fakes.rave import FakeRave
from tests.fakes.redcap import FakeRedcap
from tests.fakes.veeva import FakeVault

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-Pa55word-never-logged"
TOKEN = "0123456789ABCDEF0123456789ABCDEF"


def connection_for(vendor, url, *, remote_study="", prefix="TRIALOPS_EDC_TEST"):
    return EdcConnection.objects.create(study=StudyFactory(), vendor=vendor, base_url=url, remote_study=remote_study,
                                        credentials_env=prefix)


@pytest.fixture
def credentials(settings):
    settings.EDC_SECRETS = {"TRIALOPS_EDC_TEST_USERNAME": "svc.trialops", "TRIALOPS_EDC_TEST_PASSWORD": PASSWORD,
                            "TRIALOPS_EDC_TEST_TOKEN": TOKEN}
    return settings


@pytest.fixture
def rave(credentials):
    fake = FakeRave(username="svc.trialops", password=PASSWORD)
    with serve(fake) as url:
        fake.connection = connection_for(EdcConnection.Vendor.RAVE, url, remote_study="Mediflex(Prod)")
        yield fake


def test_rave_sync_imports_metadata_and_data_through_the_odm_importer(rave):
    records = edc_sync(connection=rave.connection)
    assert [r.status for r in records] == [Import.Status.SUCCEEDED] * 2, [r.errors for r in records]
    assert {r.source for r in records} == {Import.Source.RAVE}
    study = rave.connection.study
    assert set(Subject.objects.filter(study=study).values_list("subject_id", flat=True)) == {"101-001", "101-002"}
    point = DataPoint.objects.get(subject__subject_id="101-001", item__oid="VS.SYSBP")
    assert (point.raw_value, point.value_number) == ("135", 135.0)
    assert "GET metadata/studies/Mediflex/versions/12?" in rave.requests
    rave.connection.refresh_from_db()
    assert rave.connection.last_synced_at is not None


def test_rave_incremental_pull_asks_for_changes_since_the_last_sync(rave):
    edc_sync(connection=rave.connection)
    rave.changed_sysbp = "142"
    records = edc_sync(connection=rave.connection)
    dataset_calls = [r for r in rave.requests if "datasets/regular" in r]
    assert "start=" not in dataset_calls[0] and "start=" in dataset_calls[1]
    assert records[1].counts["data_points_changed"] == 1
    point = DataPoint.objects.get(subject__subject_id="101-001", item__oid="VS.SYSBP")
    assert (point.raw_value, point.version) == ("142", 2)
    assert point.history.latest().history_change_reason == f"EDC sync {records[1].pk}"


def test_rave_queries_are_posted_as_mdsol_queries_and_their_states_read_back(rave):
    adapter = adapter_for(rave.connection)
    sent = adapter.push_queries([OutboundQuery(local_id="TQ-7", subject_key="101-001", visit_oid="SCREEN",
                                               form_oid="VS", item_oid="VS.SYSBP",
                                               text="Systolic BP 240 is outside 60-220 mmHg; please verify.")])
    assert sent == {"TQ-7": "TQ-7"}
    posted = etree.fromstring(rave.posted[0])
    query = posted.find(".//{http://www.mdsol.com/ns/odm/metadata}Query")
    assert query.get("Status") == "Open" and query.get("QueryRepeatKey") == "TQ-7"
    states = adapter.pull_query_states()
    assert [(s.remote_id, s.state, s.subject_key, s.item_oid) for s in states] == [
        ("Q1", "answered", "101-001", "VS.SYSBP")]


def test_a_rave_authentication_failure_never_shows_the_password(rave, credentials, caplog):
    caplog.set_level(logging.DEBUG)
    credentials.EDC_SECRETS = {**credentials.EDC_SECRETS, "TRIALOPS_EDC_TEST_PASSWORD": PASSWORD + "-wrong"}
    with pytest.raises(EdcError) as failure:
        adapter_for(rave.connection).pull_metadata()
    assert "Authentication failure" in str(failure.value)
    assert PASSWORD not in str(failure.value) and PASSWORD not in caplog.text


@pytest.fixture
def redcap(credentials, tmp_path):
    # The token comes from a secret file here (the *_FILE variant).
    secret = tmp_path / "redcap-token"
    secret.write_text(TOKEN + "\n")
    credentials.EDC_SECRETS = {"TRIALOPS_EDC_RC_TOKEN_FILE": str(secret)}
    fake = FakeRedcap(token=TOKEN)
    with serve(fake) as url:
        fake.connection = connection_for(EdcConnection.Vendor.REDCAP, f"{url}/api/", prefix="TRIALOPS_EDC_RC")
        yield fake


def test_redcap_sync_maps_json_records_to_data_points(redcap):
    [record] = edc_sync(connection=redcap.connection)
    assert record.status == Import.Status.SUCCEEDED, record.errors
    assert record.source == Import.Source.REDCAP
    assert record.counts["data_points_created"] == 3  # two consent dates, one weight (a blank is no value)
    weight = DataPoint.objects.get(subject__subject_id="1", item__oid="weight")
    assert (weight.value_number, weight.form.oid, weight.visit.definition.oid) == (71.5, "vitals", "baseline_arm_1")
    assert weight.item.data_type == "float" and weight.item.units == "kg"
    assert weight.subject.site.number == "paris"
    assert DataPoint.objects.get(subject__subject_id="2", item__oid="consent_date").value_date.isoformat() == \
        "2025-01-11"
    assert {c["content"] for c in redcap.calls} == {"metadata", "record"}
    assert all(c.get("format") == "json" for c in redcap.calls)


def test_redcap_incremental_pull_sends_the_date_range(redcap):
    edc_sync(connection=redcap.connection)
    redcap.connection.last_synced_at = datetime(2025, 1, 11, 0, 0, tzinfo=UTC)
    [record] = edc_sync(connection=redcap.connection)
    assert redcap.calls[-1]["dateRangeBegin"] == "2025-01-11 00:00:00"
    assert record.counts["data_points_unchanged"] == 1 and record.counts["data_points_created"] == 0


def test_redcap_has_no_query_api_and_says_so(redcap):
    with pytest.raises(EdcNotSupported):
        adapter_for(redcap.connection).push_queries([])


def test_a_bad_redcap_token_never_shows_the_token(redcap, credentials, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    wrong = "F" * 32
    (tmp_path / "redcap-token").write_text(wrong)
    with pytest.raises(EdcError) as failure:
        edc_sync(connection=redcap.connection)
    assert "permissions" in str(failure.value)
    assert wrong not in str(failure.value) and wrong not in caplog.text
    (tmp_path / "redcap-token").write_text("too-short-" + TOKEN[:5])
    with pytest.raises(EdcError) as malformed:
        edc_sync(connection=redcap.connection)
    assert TOKEN[:5] not in str(malformed.value) and "TRIALOPS_EDC_RC_TOKEN" in str(malformed.value)


@pytest.fixture
def vault(credentials):
    fake = FakeVault(username="svc.trialops", password=PASSWORD)
    with serve(fake) as url:
        fake.connection = connection_for(EdcConnection.Vendor.VEEVA, url, remote_study="ACME-101")
        yield fake


def test_vault_sync_authenticates_with_a_session_and_loads_the_data(vault):
    [record] = edc_sync(connection=vault.connection)
    assert record.status == Import.Status.SUCCEEDED, record.errors
    assert record.counts["data_points_created"] == 2
    hr = DataPoint.objects.get(subject__subject_id="SCR-0002")
    assert (hr.value_number, hr.item.units, hr.visit.definition.name) == (88.0, "beats/min", "Screening")
    assert len(vault.sessions) == 1


def test_vault_queries_round_trip(vault):
    adapter = adapter_for(vault.connection)
    sent = adapter.push_queries([OutboundQuery(local_id="TQ-1", subject_key="SCR-0001", visit_oid="screening",
                                               form_oid="vs", item_oid="hr", text="Please verify heart rate.")])
    assert sent == {"TQ-1": "Q-1"}
    vault.queries[0]["status"] = "answered"
    [state] = adapter.pull_query_states()
    assert (state.remote_id, state.state, state.subject_key) == ("Q-1", "answered", "SCR-0001")


def test_a_vault_login_failure_never_shows_the_password(vault, credentials, caplog):
    caplog.set_level(logging.DEBUG)
    credentials.EDC_SECRETS = {**credentials.EDC_SECRETS, "TRIALOPS_EDC_TEST_PASSWORD": "other-" + PASSWORD}
    with pytest.raises(EdcError) as failure:
        edc_sync(connection=vault.connection)
    assert "USERNAME_OR_PASSWORD_INCORRECT" in str(failure.value)
    assert PASSWORD not in str(failure.value) and PASSWORD not in caplog.text


def test_a_missing_credential_names_the_variable_only(vault, credentials):
    credentials.EDC_SECRETS = {}
    with pytest.raises(EdcError, match="TRIALOPS_EDC_TEST_USERNAME"):
        edc_sync(connection=vault.connection)


def test_connections_are_due_after_their_interval(credentials):
    never = connection_for(EdcConnection.Vendor.VEEVA, "https://vault.example.org")
    recent = connection_for(EdcConnection.Vendor.VEEVA, "https://vault.example.org")
    recent.last_synced_at = datetime.now(UTC)
    recent.save()
    stale = connection_for(EdcConnection.Vendor.VEEVA, "https://vault.example.org")
    stale.last_synced_at = datetime(2020, 1, 1, tzinfo=UTC)
    stale.save()
    off = connection_for(EdcConnection.Vendor.VEEVA, "https://vault.example.org")
    off.enabled = False
    off.save()
    assert sorted(edc_connections_due()) == sorted([never.pk, stale.pk])
