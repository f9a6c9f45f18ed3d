from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from guardian.models import UserObjectPermission

from deviations.models import Deviation
from queries.models import Query, QueryMessage
from studies.models import (
    DataPoint,
    ItemDefinition,
    Role,
    Site,
    Study,
    StudyMembership,
    Subject,
    SubjectVisit,
    VisitDefinition,
)
from studies.selectors import site_list, study_list

pytestmark = pytest.mark.django_db

MAIN = "TRIALOPS-DEMO-001"
SMALL = "TRIALOPS-DEMO-002"
SEEDED_MODELS = [Study, Site, VisitDefinition, ItemDefinition, Subject, SubjectVisit, DataPoint, Query, QueryMessage,
                 Deviation, StudyMembership, get_user_model(), UserObjectPermission, LogEntry]


def seed() -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("seed_demo", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def counts() -> dict[str, int]:
    audited = [model for model in SEEDED_MODELS if hasattr(model, "history")]
    rows = {model.__name__: model._default_manager.count() for model in SEEDED_MODELS}
    rows.update({f"history of {model.__name__}": model.history.count() for model in audited})
    return rows


def user(username):
    return get_user_model().objects.get(username=username)


def test_it_can_run_twice_without_duplicating_anything():
    seed()
    first = counts()
    seed()
    assert counts() == first
    assert first["Subject"] >= 40
    assert first["DataPoint"] >= 300


def test_every_role_has_a_demo_user_with_its_membership_and_scope():
    seed()
    main = Study.objects.get(protocol_id=MAIN)
    expected = {
        "sponsor": (Role.SPONSOR, None), "dm": (Role.DATA_MANAGER, None), "cra": (Role.CRA, None),
        "site1": (Role.SITE_COORDINATOR, "101"), "pi1": (Role.INVESTIGATOR, "101"),
        "site2": (Role.SITE_COORDINATOR, "102"), "medmon": (Role.MEDICAL_MONITOR, None),
        "auditor": (Role.AUDITOR, None),
    }
    for username, (role, site_number) in expected.items():
        membership = StudyMembership.objects.get(user__username=username, study=main)
        assert membership.role == role
        assert (membership.site.number if membership.site else None) == site_number
        assert user(username).check_password(settings.DEMO_PASSWORD)

    def numbers(username):
        return set(site_list(user=user(username), study=main).values_list("number", flat=True))

    assert numbers("cra") == {"101", "102"}
    assert numbers("site1") == numbers("pi1") == {"101"}
    assert numbers("site2") == {"102"}
    assert numbers("dm") == numbers("auditor") == {"101", "102", "103", "104"}


def test_only_the_sponsor_and_the_data_manager_see_the_second_study():
    seed()
    for username in ("sponsor", "dm"):
        assert set(study_list(user=user(username)).values_list("protocol_id", flat=True)) == {MAIN, SMALL}
    for username in ("cra", "site1", "pi1", "site2", "medmon", "auditor"):
        assert list(study_list(user=user(username)).values_list("protocol_id", flat=True)) == [MAIN]


def test_the_sponsor_can_use_the_admin_through_the_sponsors_group():
    seed()
    sponsor = user("sponsor")
    assert sponsor.is_staff and not sponsor.is_superuser
    assert sponsor.groups.filter(name="Sponsors").exists()
    for perm in ("studies.view_datapoint", "studies.change_study", "queries.view_query", "deviations.change_deviation"):
        assert sponsor.has_perm(perm), perm
    assert not user("dm").is_staff


def test_every_data_point_has_history_by_the_seed_user_with_a_reason():
    seed()
    history = DataPoint.history.filter(study__protocol_id=MAIN)
    assert history.values("id").distinct().count() == DataPoint.objects.filter(study__protocol_id=MAIN).count()
    assert not history.exclude(history_user__username="system.seed").exists()
    assert not history.filter(history_change_reason__isnull=True).exists()
    assert not history.filter(history_change_reason="").exists()

    changed = DataPoint.objects.filter(study__protocol_id=MAIN, version__gte=2)
    assert changed.count() >= 2
    versions = list(changed.first().history.order_by("history_date").values_list("raw_value",
                                                                                 "history_change_reason"))
    assert len(versions) >= 2
    assert versions[0][0] != versions[-1][0]
    assert versions[-1][1] != versions[0][1]


def test_the_demo_data_tells_a_story_worth_reviewing():
    seed()
    main = Study.objects.get(protocol_id=MAIN)
    assert main.sites.values("country").distinct().count() >= 3
    assert not main.sites.filter(latitude__isnull=True).exists()
    assert main.sites.values("timezone").distinct().count() == main.sites.count()
    assert main.item_definitions.filter(critical=True).exists()
    data = DataPoint.objects.filter(study=main)
    assert data.filter(raw_value="").exists()
    assert data.filter(item__oid="I.LB.HGB", value_number__gt=20).exists()  # a unit error left to find
    states = set(Query.objects.filter(study=main).values_list("state", flat=True))
    assert {"open", "answered", "closed", "candidate", "cancelled"} <= states
    assert QueryMessage.objects.filter(query__state="closed", kind="close").exists()
    importance = set(Deviation.objects.filter(study=main).values_list("importance", flat=True))
    assert importance == {"important", "non_important"}
    statuses = set(main.subjects.values_list("status", flat=True))
    assert {"enrolled", "completed", "screen_failed"} <= statuses


def test_it_warns_that_the_password_is_for_the_demo_only():
    _out, err = seed()
    assert "demo only" in err
    assert settings.DEMO_PASSWORD in err


@override_settings(SETTINGS_MODULE="config.settings.production")
def test_it_refuses_production_settings_unless_forced():
    with pytest.raises(CommandError):
        call_command("seed_demo", stdout=StringIO(), stderr=StringIO())
    assert not Study.objects.exists()


@pytest.mark.django_db
def test_demo_users_reach_the_realistic_clindata_study_when_it_is_loaded():
    from pathlib import Path

    from rest_framework.test import APIClient

    from studies.ingest.clindata import clindata_import
    from studies.models import Study

    record = clindata_import(directory=Path(settings.BASE_DIR) / "data" / "demo" / "clindata", actor=None)
    assert record.status == "succeeded", record.errors
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())
    study = Study.objects.get(protocol_id="AA-AA-000-0000")

    def sites_seen(username):
        client = APIClient()
        client.force_authenticate(get_user_model().objects.get(username=username))
        rows = client.get("/api/v1/subjects/", {"study": study.pk, "page_size": 500}).json()["results"]
        return {row["site_number"] for row in rows}

    everything = sites_seen("dm")
    assert len(everything) == 10
    first, second = sorted(everything, key=lambda number: (len(number), number))[:2]
    assert sites_seen("site1") == sites_seen("pi1") == {first}
    assert sites_seen("site2") == {second}
    assert sites_seen("cra") == {first, second}
    assert sites_seen("medmon") == sites_seen("auditor") == sites_seen("sponsor") == everything


@pytest.mark.django_db
def test_the_clindata_command_attributes_its_writes_to_the_import_account():
    from studies.models import DataPoint

    call_command("import_clindata", str(settings.BASE_DIR / "data" / "demo" / "clindata"), stdout=StringIO())
    latest = DataPoint.history.order_by("-history_id").first()
    assert latest.history_user is not None and latest.history_user.username == "system.import"
    assert latest.history_change_reason.startswith("EDC sync ")


def test_the_demo_has_a_monitoring_plan_and_the_cra_sees_their_calendar():
    from sdv.monitoring.models import MonitoringPlan, MonitoringVisit

    seed()
    study = Study.objects.get(protocol_id=MAIN)
    plan = MonitoringPlan.objects.get(study=study)
    visits = MonitoringVisit.objects.filter(study=study)
    assert plan.last_result["breaches"] == 0 and visits.count() == plan.last_result["visits"] > 0
    own = visits.filter(monitor__user__username="cra")
    assert own.exists() and set(own.values_list("site__number", flat=True)) <= {"101", "102"}
    seed()  # idempotent: neither a second plan nor new visits
    assert MonitoringPlan.objects.filter(study=study).count() == 1 and visits.count() == plan.last_result["visits"]
    from django.test import Client

    client = Client()
    client.force_login(user("cra"))
    page = client.get(f"/monitoring/calendar/?view=month&at={own.order_by('date').first().date}").content.decode()
    assert 'data-testid="visit"' in page
