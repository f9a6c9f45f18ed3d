"""The server-rendered UI: pages show the data of the user's scope and nothing else; an object
outside the scope answers 404 exactly like a missing one."""

import datetime
from types import SimpleNamespace

import pytest
from django.urls import reverse

from queries.models import Query
from studies.models import DataPoint, Role, Subject
from studies.services import cra_site_assign, data_point_update, membership_grant
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

pytestmark = pytest.mark.django_db

CHANGE_REASON = "Transcription error corrected against source"


@pytest.fixture
def trial():
    """One study with a French site A and a German site B, a subject with a changed value at each,
    an open query at site A, and one user per role of interest."""
    study = StudyFactory(protocol_id="CARD-301", name="Cardio Outcomes Trial")
    other_study = StudyFactory(protocol_id="ONC-102", name="Oncology Dose Finding")
    site_a = SiteFactory(study=study, number="101", name="Hopital Saint-Louis", country="FR", city="Paris")
    site_b = SiteFactory(study=study, number="201", name="Charite Berlin", country="DE", city="Berlin")
    screening = VisitDefinitionFactory(study=study, name="Screening", order=1, planned_day=-14)
    baseline = VisitDefinitionFactory(study=study, name="Baseline", order=2, planned_day=1)
    vitals = FormDefinitionFactory(study=study, name="Vital signs", oid="F.VS")
    sbp = ItemDefinitionFactory(study=study, form=vitals, oid="I.SYSBP", label="Systolic blood pressure", units="mmHg")

    site_user = UserFactory(username="coord.a", first_name="Claire", last_name="Martin")
    data_manager = UserFactory(username="dm")
    cra = UserFactory(username="cra")
    auditor = UserFactory(username="auditor")
    outsider = UserFactory(username="outsider")
    membership_grant(user=site_user, study=study, role=Role.SITE_COORDINATOR, site=site_a)
    membership_grant(user=data_manager, study=study, role=Role.DATA_MANAGER)
    membership_grant(user=auditor, study=study, role=Role.AUDITOR)
    membership_grant(user=cra, study=study, role=Role.CRA)
    cra_site_assign(cra=cra, site=site_b)
    membership_grant(user=outsider, study=other_study, role=Role.DATA_MANAGER)

    subject_a = SubjectFactory(site=site_a, subject_id="101-001")
    subject_b = SubjectFactory(site=site_b, subject_id="201-001")
    visit_a = SubjectVisitFactory(subject=subject_a, definition=baseline, actual_date=datetime.date(2025, 2, 3))
    SubjectVisitFactory(subject=subject_a, definition=screening, actual_date=datetime.date(2025, 1, 20))
    visit_b = SubjectVisitFactory(subject=subject_b, definition=baseline, actual_date=datetime.date(2025, 2, 5))
    point_a = DataPointFactory(visit=visit_a, item=sbp, raw_value="210", value_number=210,
                               sdv_state=DataPoint.SdvState.VERIFIED)
    point_a = data_point_update(data_point=point_a, raw_value="120", actor=site_user, reason=CHANGE_REASON)
    point_b = DataPointFactory(visit=visit_b, item=sbp, raw_value="135", value_number=135)
    Query.objects.create(study=study, site=site_a, subject=subject_a, data_point=point_a,
                         text="Please verify the systolic blood pressure against source.")
    Query.objects.create(study=study, site=site_a, subject=subject_a, state=Query.State.CLOSED, text="Closed one.")
    return SimpleNamespace(**locals())


def login(client, user):
    client.force_login(user)
    return client


def test_anonymous_users_are_sent_to_login(client, trial):
    for url in (reverse("study-list"), "/studies/", reverse("study-detail", args=[trial.study.pk]),
                reverse("subject-detail", args=[trial.subject_a.pk]),
                reverse("data-point-history", args=[trial.point_a.pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")


def test_login_page_logs_a_user_in_and_lands_on_the_study_list(client, trial):
    page = client.get(reverse("login"))
    assert b"Log in" in page.content and b'name="password"' in page.content

    response = client.post(reverse("login"), {"username": "coord.a", "password": "pw-for-tests"}, follow=True)

    assert response.redirect_chain[-1][0] == reverse("study-list")
    assert "Cardio Outcomes Trial" in response.text
    assert "Claire Martin" in response.text


def test_a_wrong_password_shows_an_error_and_logs_nobody_in(client, trial):
    response = client.post(reverse("login"), {"username": "coord.a", "password": "nope"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.text
    assert "_auth_user_id" not in client.session


def test_logout_is_a_post(client, trial):
    login(client, trial.site_user)
    assert client.get(reverse("logout")).status_code == 405

    response = client.post(reverse("logout"))

    assert response.status_code == 302 and response["Location"] == reverse("login")
    assert client.get(reverse("study-list")).status_code == 302


def test_study_list_shows_only_the_users_studies_with_their_role(client, trial):
    response = login(client, trial.site_user).get(reverse("study-list"))

    assert "CARD-301" in response.text and "Cardio Outcomes Trial" in response.text
    assert "Site coordinator" in response.text
    assert "ONC-102" not in response.text
    assert [row["site_count"] for row in response.context["studies"]] == [1]


def test_navigation_shows_the_user_and_a_logout_form(client, trial):
    response = login(client, trial.site_user).get(reverse("study-list"))

    assert "{#" not in response.text and "{%" not in response.text  # no template syntax leaks

    assert 'data-testid="nav-roles">Site coordinator<' in response.text
    assert f'action="{reverse("logout")}"' in response.text and 'method="post"' in response.text


def test_study_dashboard_of_a_site_user_lists_only_their_site(client, trial):
    response = login(client, trial.site_user).get(reverse("study-detail", args=[trial.study.pk]))

    assert response.status_code == 200
    assert "Hopital Saint-Louis" in response.text and "Paris" in response.text
    assert "Charite Berlin" not in response.text and "Berlin" not in response.text
    assert "201-001" not in response.text
    assert "101-001" in response.text
    [site] = response.context["sites"]
    assert (site.subject_count, site.data_point_count, site.open_query_count) == (1, 1, 1)
    assert response.context["roles"] == ["Site coordinator"]
    assert '<span class="badge badge-role">Site coordinator</span>' in response.text


def test_study_dashboard_of_a_data_manager_has_every_site_and_totals(client, trial):
    response = login(client, trial.data_manager).get(reverse("study-detail", args=[trial.study.pk]))

    rows = {site.number: (site.country, site.city, site.subject_count, site.data_point_count, site.open_query_count)
            for site in response.context["sites"]}
    assert rows == {"101": ("FR", "Paris", 1, 1, 1), "201": ("DE", "Berlin", 1, 1, 0)}
    assert response.context["totals"] == {"subject_count": 2, "data_point_count": 2, "open_query_count": 1,
                                          "deviation_count": 0}
    assert "Total (2 sites)" in response.text
    assert "Data manager" in response.text


def test_a_cra_sees_only_the_sites_assigned_to_them(client, trial):
    response = login(client, trial.cra).get(reverse("study-detail", args=[trial.study.pk]))

    assert [site.number for site in response.context["sites"]] == ["201"]
    assert "201-001" in response.text and "101-001" not in response.text
    assert client.get(reverse("subject-detail", args=[trial.subject_a.pk])).status_code == 404


def test_a_study_without_membership_is_not_found(client, trial):
    login(client, trial.outsider)

    response = client.get(reverse("study-detail", args=[trial.study.pk]))

    assert response.status_code == 404
    assert "Cardio" not in response.text


@pytest.mark.parametrize("url_name, target", [
    ("subject-detail", "subject_b"),
    ("data-point-history", "point_b"),
])
def test_a_site_user_gets_404_for_the_other_sites_records(client, trial, url_name, target):
    login(client, trial.site_user)

    response = client.get(reverse(url_name, args=[getattr(trial, target).pk]))

    assert response.status_code == 404
    assert "201-001" not in response.text and "135" not in response.text


def test_an_out_of_scope_record_answers_like_a_missing_one(client, trial):
    login(client, trial.site_user)
    missing = client.get(reverse("subject-detail", args=[999_999]))
    hidden = client.get(reverse("subject-detail", args=[trial.subject_b.pk]))

    assert (missing.status_code, hidden.status_code) == (404, 404)
    assert missing.content == hidden.content


def test_a_change_to_another_sites_data_point_is_not_found_and_changes_nothing(client, trial):
    login(client, trial.site_user)

    response = client.post(reverse("data-point-history", args=[trial.point_b.pk]),
                           {"raw_value": "999", "reason": "probe", "version": 1})

    assert response.status_code == 404
    trial.point_b.refresh_from_db()
    assert (trial.point_b.raw_value, trial.point_b.version) == ("135", 1)


def test_subject_page_shows_visits_and_data_points_by_visit_and_form(client, trial):
    response = login(client, trial.site_user).get(reverse("subject-detail", args=[trial.subject_a.pk]))

    text = response.text
    assert "101-001" in text
    assert text.index("Screening") < text.index("Baseline")  # schedule order
    assert "2025-01-20" in text and "2025-02-03" in text
    assert "Vital signs" in text and "F.VS" in text
    assert "Systolic blood pressure" in text and "mmHg" in text
    assert "No data entered for this visit." in text  # screening has no data
    baseline = next(section for section in response.context["sections"] if section["visit"] == trial.visit_a)
    [(form, [point])] = baseline["forms"]
    assert (form.name, point.raw_value, point.version, point.open_query_count) == ("Vital signs", "120", 2, 1)
    assert point.get_sdv_state_display() == "To verify"  # a verified value that changed goes back
    assert reverse("data-point-history", args=[trial.point_a.pk]) in text


def test_history_page_shows_every_version_with_who_when_and_why(client, trial):
    response = login(client, trial.data_manager).get(reverse("data-point-history", args=[trial.point_a.pk]))

    history = response.context["history"]
    assert [(row.version, row.raw_value, row.history_type) for row in history] == [(2, "120", "~"), (1, "210", "+")]
    assert history[0].history_user == trial.site_user
    assert history[0].previous_value == "210"
    text = response.text
    assert CHANGE_REASON in text
    assert "Claire Martin" in text and "(coord.a)" in text
    assert history[0].history_date.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S") in text
    assert "When (UTC)" in text and "Changed" in text and "Created" in text


def test_a_user_who_may_not_enter_data_gets_no_change_form_and_cannot_post(client, trial):
    login(client, trial.auditor)
    page = client.get(reverse("data-point-history", args=[trial.point_a.pk]))
    assert "Change the value" not in page.text

    response = client.post(reverse("data-point-history", args=[trial.point_a.pk]),
                           {"raw_value": "130", "reason": "Auditor edit", "version": 2})

    assert response.status_code == 403
    trial.point_a.refresh_from_db()
    assert (trial.point_a.raw_value, trial.point_a.version) == ("120", 2)


def test_a_site_user_changes_a_value_with_a_reason_and_the_audit_trail_records_it(client, trial):
    login(client, trial.site_user)
    url = reverse("data-point-history", args=[trial.point_a.pk])
    assert "Change the value" in client.get(url).text

    response = client.post(url, {"raw_value": "128", "reason": "Correction after query", "version": 2}, follow=True)

    assert "Value changed to &#x27;128&#x27; (version 3)" in response.text
    trial.point_a.refresh_from_db()
    assert (trial.point_a.raw_value, trial.point_a.value_number, trial.point_a.version) == ("128", 128.0, 3)
    latest = trial.point_a.history.latest()
    assert (latest.history_user, latest.history_change_reason) == (trial.site_user, "Correction after query")
    assert "Correction after query" in response.text


def test_a_change_without_a_reason_is_refused_with_a_visible_error(client, trial):
    login(client, trial.site_user)

    response = client.post(reverse("data-point-history", args=[trial.point_a.pk]),
                           {"raw_value": "128", "reason": " ", "version": 2})

    assert response.status_code == 200
    assert "This field is required." in response.text
    trial.point_a.refresh_from_db()
    assert (trial.point_a.raw_value, trial.point_a.version) == ("120", 2)
    assert trial.point_a.history.count() == 2


def test_a_change_from_a_stale_page_is_refused_and_overwrites_nothing(client, trial):
    login(client, trial.site_user)
    url = reverse("data-point-history", args=[trial.point_a.pk])
    data_point_update(data_point=trial.point_a, raw_value="125", actor=trial.data_manager, reason="Query response")

    response = client.post(url, {"raw_value": "128", "reason": "Data entry error", "version": 2})

    assert "Someone changed this value since you opened the page (now version 3)" in response.text
    assert '<input type="hidden" name="version" value="3">' in response.text
    trial.point_a.refresh_from_db()
    assert (trial.point_a.raw_value, trial.point_a.version) == ("125", 3)


def test_a_value_of_the_wrong_type_is_refused_with_the_services_message(client, trial):
    login(client, trial.site_user)

    response = client.post(reverse("data-point-history", args=[trial.point_a.pk]),
                           {"raw_value": "one twenty", "reason": "Data entry error", "version": 2})

    assert response.status_code == 200
    assert "is not a number" in response.text
    trial.point_a.refresh_from_db()
    assert trial.point_a.raw_value == "120"


def test_an_unchanged_value_records_nothing(client, trial):
    login(client, trial.site_user)

    response = client.post(reverse("data-point-history", args=[trial.point_a.pk]),
                           {"raw_value": "120", "reason": "Data entry error", "version": 2}, follow=True)

    assert "The value is unchanged; nothing was recorded." in response.text
    assert trial.point_a.history.count() == 2


def test_subject_search_with_htmx_returns_only_the_table(client, trial):
    SubjectFactory(site=trial.site_a, subject_id="101-002", status=Subject.Status.SCREENING)
    login(client, trial.site_user)
    url = reverse("study-detail", args=[trial.study.pk])

    response = client.get(url, {"q": "002"}, headers={"HX-Request": "true"})

    assert "<html" not in response.text and "Sites" not in response.text
    assert "101-002" in response.text and "101-001" not in response.text
    assert "HX-Request" in response["Vary"]
    full = client.get(url, {"status": "screening"})
    assert "<html" in full.text and "101-002" in full.text and "101-001" not in full.text


def test_filtering_by_a_site_outside_the_scope_shows_nothing_of_it(client, trial):
    login(client, trial.site_user)

    response = client.get(reverse("study-detail", args=[trial.study.pk]), {"site": trial.site_b.pk},
                          headers={"HX-Request": "true"})

    assert "201-001" not in response.text
    assert "101-001" in response.text  # the invalid filter is dropped, the scope stays


def test_subjects_are_paginated_fifty_per_page(client, trial):
    for number in range(2, 53):
        SubjectFactory(site=trial.site_a, subject_id=f"101-{number:03d}")
    login(client, trial.site_user)
    url = reverse("study-detail", args=[trial.study.pk])

    first = client.get(url)
    second = client.get(url, {"page": 2})

    assert len(first.context["page"].object_list) == 50
    assert "Subjects 1–50 of 52" in first.text and "Page 1 of 2" in first.text
    assert [s.subject_id for s in second.context["page"].object_list] == ["101-051", "101-052"]
    assert "101-001" not in second.text.split('id="subjects"')[1]


def test_the_study_page_costs_the_same_queries_however_many_subjects(client, trial, django_assert_max_num_queries):
    for number in range(2, 60):
        SubjectFactory(site=trial.site_a, subject_id=f"101-{number:03d}")
    login(client, trial.data_manager)

    with django_assert_max_num_queries(15):
        response = client.get(reverse("study-detail", args=[trial.study.pk]))

    assert response.context["totals"]["subject_count"] == 60
