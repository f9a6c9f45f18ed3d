"""The audit trail: who, when (UTC), old and new value, and why, for every regulated write."""

import datetime

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.db import transaction
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from deviations.models import Deviation
from queries.models import Query, QueryMessage
from sdv.models import SourceDocument
from studies.audit import (
    AuditBypassError,
    ReasonRequired,
    audited_bulk_create,
    audited_bulk_update,
    set_audit,
)
from studies.models import DataPoint, Role, Site, StudyMembership, Subject
from studies.services import data_point_update, membership_grant
from tests.factories import (
    DataPointFactory,
    FormDefinitionFactory,
    ItemDefinitionFactory,
    SiteFactory,
    StudyFactory,
    SubjectFactory,
    SubjectVisitFactory,
    UserFactory,
    VisitDefinitionFactory,
)


@pytest.fixture
def site_user(db):
    return UserFactory(username="coordinator")


@pytest.fixture
def data_point(site_user):
    point = DataPointFactory(raw_value="120", value_number=120.0)
    membership_grant(user=site_user, study=point.study, role=Role.SITE_COORDINATOR, site=point.subject.site)
    return point


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# --- Reason for change ---------------------------------------------------------------------


def test_a_change_without_reason_is_refused_by_the_api_and_changes_nothing(data_point, site_user):
    response = api(site_user).patch(f"/api/v1/data-points/{data_point.pk}/", {"raw_value": "135"}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "message": "reason: This field is required.",
        "extra": {"fields": {"reason": ["This field is required."]}},
    }
    data_point.refresh_from_db()
    assert (data_point.raw_value, data_point.version) == ("120", 1)
    assert data_point.history.count() == 1


def test_a_blank_reason_is_refused_too(data_point, site_user):
    response = api(site_user).patch(
        f"/api/v1/data-points/{data_point.pk}/", {"raw_value": "135", "reason": "   "}, format="json"
    )
    assert response.status_code == 400
    data_point.refresh_from_db()
    assert data_point.raw_value == "120"


def test_the_model_refuses_a_save_without_reason(data_point):
    data_point.raw_value = "999"
    with pytest.raises(ReasonRequired):
        data_point.save()
    assert DataPoint.objects.get(pk=data_point.pk).raw_value == "120"


def test_a_value_that_does_not_fit_the_item_type_is_refused(data_point, site_user):
    response = api(site_user).patch(
        f"/api/v1/data-points/{data_point.pk}/", {"raw_value": "abc", "reason": "typo"}, format="json"
    )
    assert response.status_code == 400
    assert "is not a number" in response.json()["message"]
    data_point.refresh_from_db()
    assert data_point.raw_value == "120"


def test_a_change_keeps_who_when_old_new_and_why(data_point, site_user):
    response = api(site_user).patch(
        f"/api/v1/data-points/{data_point.pk}/", {"raw_value": "135", "reason": "Transcription error"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["version"] == 2

    old, new = data_point.history.order_by("history_date", "history_id")
    assert (old.raw_value, new.raw_value) == ("120", "135")
    assert new.history_user == site_user
    assert new.history_change_reason == "Transcription error"
    assert new.history_type == "~"
    assert new.history_date.utcoffset() == datetime.timedelta(0)
    assert new.value_number == 135.0
    delta = new.diff_against(old)
    assert {c.field for c in delta.changes} >= {"raw_value", "value_number", "version"}


def test_the_api_serves_the_history_of_a_data_point(data_point, site_user):
    api(site_user).patch(
        f"/api/v1/data-points/{data_point.pk}/", {"raw_value": "135", "reason": "Corrected from source"},
        format="json",
    )
    body = api(site_user).get(f"/api/v1/data-points/{data_point.pk}/history/").json()

    assert body["count"] == 2
    first, second = body["results"]
    assert (first["history_type"], first["raw_value"], first["version"]) == ("created", "120", 1)
    assert (second["history_type"], second["raw_value"], second["version"]) == ("changed", "135", 2)
    assert second["history_user"] == "coordinator"
    assert second["reason"] == "Corrected from source"


def test_a_verified_value_goes_back_to_to_verify_when_it_changes(data_point, site_user):
    set_audit(data_point, actor=site_user, reason="SDV done")
    data_point.sdv_state = DataPoint.SdvState.VERIFIED
    data_point.save()
    data_point_update(data_point=data_point, raw_value="130", actor=site_user, reason="Late correction")
    data_point.refresh_from_db()
    assert data_point.sdv_state == DataPoint.SdvState.TO_VERIFY


# --- Bulk writes -----------------------------------------------------------------------------


def test_queryset_update_on_an_audited_model_is_refused(data_point):
    with pytest.raises(AuditBypassError):
        DataPoint.objects.filter(pk=data_point.pk).update(raw_value="0")
    with pytest.raises(AuditBypassError):
        Subject.objects.all().update(status=Subject.Status.COMPLETED)
    assert DataPoint.objects.get(pk=data_point.pk).raw_value == "120"


def test_bulk_update_and_bulk_create_are_refused_too(data_point):
    data_point.raw_value = "1"
    with pytest.raises(AuditBypassError):
        DataPoint.objects.bulk_update([data_point], ["raw_value"])
    with pytest.raises(AuditBypassError):
        Site.objects.bulk_create([Site(study=data_point.study, number="X", name="X", country="DE")])
    assert not Site.objects.filter(number="X").exists()


def test_the_bulk_helper_writes_history_rows_with_actor_and_reason(data_point, site_user):
    others = [
        DataPointFactory(visit=data_point.visit, item=ItemDefinitionFactory(study=data_point.study))
        for _ in range(3)
    ]
    points = [data_point, *others]
    for point in points:
        point.raw_value = "77"
    audited_bulk_update(points, ["raw_value"], actor=site_user, reason="EDC sync 42")

    for point in points:
        latest = point.history.latest()
        assert latest.raw_value == "77"
        assert latest.history_user == site_user
        assert latest.history_change_reason == "EDC sync 42"


def test_bulk_create_helper_writes_one_history_row_per_object(db):
    study = StudyFactory()
    actor = UserFactory(username="importer")
    sites = audited_bulk_create(
        [Site(study=study, number=str(n), name=f"S{n}", country="IT", timezone="Europe/Rome") for n in range(5)],
        actor=actor, reason="Import 7",
    )
    assert Site.objects.filter(study=study).count() == 5
    assert Site.history.filter(study=study, history_type="+", history_user=actor,
                               history_change_reason="Import 7").count() == 5
    assert len(sites) == 5


def test_the_bulk_helper_requires_a_reason_and_writes_nothing_without(db):
    study = StudyFactory()
    with pytest.raises(ReasonRequired):
        audited_bulk_create([Site(study=study, number="1", name="S", country="IT")], actor=None, reason=" ")
    assert not Site.objects.filter(study=study).exists()
    assert not Site.history.filter(study=study).exists()


def test_a_failure_inside_a_bulk_write_rolls_back_data_and_history(data_point, site_user):
    history_before = DataPoint.history.count()
    data_point.raw_value = "55"
    with pytest.raises(RuntimeError), transaction.atomic():
        audited_bulk_update([data_point], ["raw_value"], actor=site_user, reason="batch")
        raise RuntimeError("the import failed after the write")
    assert DataPoint.objects.get(pk=data_point.pk).raw_value == "120"
    assert DataPoint.history.count() == history_before


def test_bulk_is_allowed_only_inside_the_helper(data_point, site_user):
    audited_bulk_update([data_point], ["raw_value"], actor=site_user, reason="one")
    with pytest.raises(AuditBypassError):
        DataPoint.objects.filter(pk=data_point.pk).update(raw_value="2")


# --- Every regulated model keeps create, change and delete ---------------------------------


def _make(model_name, actor):
    visit = SubjectVisitFactory()
    subject, site, study = visit.subject, visit.subject.site, visit.study
    builders = {
        "study": lambda: StudyFactory.build(),
        "site": lambda: SiteFactory.build(study=study),
        "subject": lambda: SubjectFactory.build(site=site, study=study),
        "visit_definition": lambda: VisitDefinitionFactory.build(study=study),
        "subject_visit": lambda: SubjectVisitFactory.build(subject=subject, study=study,
                                                           definition=VisitDefinitionFactory(study=study)),
        "form": lambda: FormDefinitionFactory.build(study=study),
        "item": lambda: ItemDefinitionFactory.build(study=study, form=FormDefinitionFactory(study=study)),
        "query": lambda: Query(study=study, site=site, subject=subject, text="Please verify."),
        "deviation": lambda: Deviation(study=study, site=site, subject=subject, description="Out of window"),
        "source_document": lambda: SourceDocument(study=study, site=site, subject=subject, file="source/x.pdf"),
    }
    return builders[model_name]()


@pytest.mark.parametrize("model_name", ["study", "site", "subject", "visit_definition", "subject_visit", "form",
                                        "item", "query", "deviation", "source_document"])
def test_create_change_and_delete_are_all_in_the_history(db, model_name):
    actor = UserFactory(username="auditor_of_record")
    obj = _make(model_name, actor)
    set_audit(obj, actor=actor, reason="created for the test")
    obj.save()
    pk = obj.pk
    set_audit(obj, actor=actor, reason="changed for the test")
    obj.save()
    set_audit(obj, actor=actor, reason="deleted for the test")
    obj.delete()

    rows = list(type(obj).history.filter(id=pk).order_by("history_date", "history_id"))
    assert [r.history_type for r in rows] == ["+", "~", "-"]
    assert [r.history_change_reason for r in rows] == ["created for the test", "changed for the test",
                                                       "deleted for the test"]
    assert all(r.history_user == actor for r in rows)


def test_query_messages_are_audited(db):
    visit = SubjectVisitFactory()
    author = UserFactory(username="site_author")
    query = Query(study=visit.study, site=visit.subject.site, subject=visit.subject, text="Please verify.")
    set_audit(query, actor=author, reason="raised")
    query.save()
    message = QueryMessage(query=query, text="Verified against source.", kind=QueryMessage.Kind.ANSWER)
    set_audit(message, actor=author, reason="answered")
    message.save()
    row = message.history.get()
    assert (row.history_type, row.history_user, row.history_change_reason, row.text) == (
        "+", author, "answered", "Verified against source.")


# --- Agents write as their own system users --------------------------------------------------


def test_an_agent_write_is_attributed_to_the_agent_user(data_point):
    from agents.identity import agent_user

    bot = agent_user("ping")
    data_point_update(data_point=data_point, raw_value="140", actor=bot, reason="EDC sync 12")
    latest = data_point.history.latest()
    assert latest.history_user.username == "agent.ping"
    assert latest.history_change_reason == "EDC sync 12"
    assert not bot.has_usable_password()


# --- Access-control audit (django-auditlog) ----------------------------------------------------


def test_membership_and_grant_changes_are_logged(db):
    study = StudyFactory()
    site = SiteFactory(study=study)
    user = UserFactory(username="new_cra")
    membership = membership_grant(user=user, study=study, role=Role.CRA)
    assign_perm("studies.monitor_site", user, site)
    membership.is_active = False
    membership.save()

    membership_log = LogEntry.objects.get_for_object(membership).order_by("timestamp")
    assert [e.action for e in membership_log] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    assert membership_log.last().changes_dict["is_active"] == ["True", "False"]
    grants = LogEntry.objects.filter(content_type__model="userobjectpermission", action=LogEntry.Action.CREATE)
    assert grants.count() == 1
    assert StudyMembership.objects.filter(user=user, is_active=False).count() == 1


def test_logins_logouts_and_failed_logins_are_logged(db, client):
    user = UserFactory(username="dm_login")
    assert client.login(username="dm_login", password="pw-for-tests")
    client.logout()
    assert not client.login(username="dm_login", password="wrong")
    assert not client.login(username="nobody", password="wrong")

    events = [e.additional_data["event"] for e in LogEntry.objects.filter(action=LogEntry.Action.ACCESS)
              .order_by("timestamp", "id")]
    assert events == ["login", "logout", "login_failed", "login_failed"]
    failed = LogEntry.objects.filter(additional_data__event="login_failed").order_by("id")
    assert failed[0].object_pk == str(user.pk)
    assert failed[1].object_repr == "nobody" and failed[1].object_pk == ""
    assert "wrong" not in str(list(failed.values()))  # never the password


def test_api_token_issue_and_refusal_are_logged(db):
    UserFactory(username="integration")
    client = APIClient()
    ok = client.post("/api/v1/auth/token/", {"username": "integration", "password": "pw-for-tests"}, format="json")
    bad = client.post("/api/v1/auth/token/", {"username": "integration", "password": "nope"}, format="json")
    assert ok.status_code == 200 and "access" in ok.json()
    assert bad.status_code == 401
    assert set(bad.json()) == {"message", "extra"}
    events = list(LogEntry.objects.filter(action=LogEntry.Action.ACCESS).values_list("additional_data__event",
                                                                                      flat=True))
    assert sorted(events) == ["login_api_token", "login_failed"]


def test_user_model_flags_are_audited(db):
    user = get_user_model().objects.create_user("flagged", password="x-very-long-pass")
    user.is_staff = True
    user.save()
    entry = LogEntry.objects.get_for_object(user).filter(action=LogEntry.Action.UPDATE).get()
    assert entry.changes_dict["is_staff"] == ["False", "True"]


def test_a_second_save_cannot_reuse_the_previous_reason_and_actor(data_point, site_user):
    data_point_update(data_point=data_point, raw_value="130", actor=site_user, reason="Transcription error")
    data_point.raw_value = "999"
    with pytest.raises(ReasonRequired):
        data_point.save()
    assert DataPoint.objects.get(pk=data_point.pk).raw_value == "130"


def test_a_user_name_with_spaces_gets_a_token_and_an_audit_row(db):
    UserFactory(username="integration")
    response = APIClient().post("/api/v1/auth/token/", {"username": " integration ", "password": "pw-for-tests"},
                                format="json")
    assert response.status_code == 200  # the serializer trims the name, as the login form does
    assert LogEntry.objects.filter(additional_data__event="login_api_token").count() == 1


def test_a_grant_made_outside_a_request_names_its_actor(db):
    study = StudyFactory()
    admin_user = UserFactory(username="study_admin")
    membership = membership_grant(user=UserFactory(username="new_dm"), study=study, role=Role.DATA_MANAGER,
                                  actor=admin_user)
    assert LogEntry.objects.get_for_object(membership).get().actor == admin_user


def test_a_change_based_on_a_stale_version_is_refused_with_409(data_point, site_user):
    client = api(site_user)
    url = f"/api/v1/data-points/{data_point.pk}/"
    first = client.patch(url, {"raw_value": "130", "reason": "Corrected", "version": 1}, format="json")
    assert first.status_code == 200 and first.json()["version"] == 2
    stale = client.patch(url, {"raw_value": "140", "reason": "Also corrected", "version": 1}, format="json")
    assert stale.status_code == 409
    assert stale.json()["extra"] == {"current_version": 2}
    data_point.refresh_from_db()
    assert (data_point.raw_value, data_point.version, data_point.history.count()) == ("130", 2, 2)
