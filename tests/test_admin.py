"""Django admin for sponsors: scoped to their studies, every change with a reason, history shown."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from studies.models import Role, Site, StudyMembership
from studies.services import membership_grant
from tests.factories import ItemDefinitionFactory, SiteFactory, StudyFactory, UserFactory


@pytest.fixture
def sponsor(db, client):
    user = UserFactory(username="sponsor_admin")
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="studies"))
    client.login(username="sponsor_admin", password="pw-for-tests")
    return user


@pytest.fixture
def studies(sponsor):
    own = StudyFactory(protocol_id="OWN-1", name="Own study")
    other = StudyFactory(protocol_id="OTHER-1", name="Other sponsor's study")
    membership_grant(user=sponsor, study=own, role=Role.SPONSOR)
    return own, other


def test_a_sponsor_sees_only_their_studies_in_admin(client, studies):
    own, other = studies
    SiteFactory(study=own, name="Lyon Hospital")
    SiteFactory(study=other, name="Secret Clinic")
    page = client.get("/admin/studies/site/").content.decode()
    assert "Lyon Hospital" in page and "Secret Clinic" not in page
    assert client.get(f"/admin/studies/study/{other.pk}/change/").status_code == 302  # "doesn't exist" redirect
    assert "Own study" in client.get("/admin/studies/study/").content.decode()


def test_an_admin_change_needs_a_reason_and_records_it(client, studies):
    own, _ = studies
    item = ItemDefinitionFactory(study=own, oid="I.SBP", label="Systolic BP", range_low=60, range_high=200)
    url = f"/admin/studies/itemdefinition/{item.pk}/change/"
    form = {
        "study": own.pk, "form": item.form_id, "oid": "I.SBP", "label": "Systolic BP", "data_type": "float",
        "units": "mmHg", "codelist": "[]", "range_low": "70", "range_high": "200", "order": "0",
        "critical": "on",
    }
    refused = client.post(url, form)
    assert refused.status_code == 200
    assert "A reason for change is required." in refused.content.decode()
    item.refresh_from_db()
    assert item.range_low == 60 and not item.critical

    accepted = client.post(url, {**form, "reason_for_change": "Protocol amendment 2"})
    assert accepted.status_code == 302
    item.refresh_from_db()
    assert item.range_low == 70 and item.critical
    latest = item.history.latest()
    assert latest.history_change_reason == "Protocol amendment 2"
    assert latest.history_user.username == "sponsor_admin"
    history_page = client.get(f"/admin/studies/itemdefinition/{item.pk}/history/").content.decode()
    assert "Protocol amendment 2" in history_page


def test_a_sponsor_cannot_attach_records_to_another_study(client, studies):
    own, other = studies
    response = client.post("/admin/studies/site/add/", {
        "study": other.pk, "number": "900", "name": "Smuggled", "country": "FR", "timezone": "Europe/Paris",
        "language": "fr", "city": "",
    })
    assert response.status_code == 200  # the form re-renders with an error
    assert not Site.objects.filter(name="Smuggled").exists()


def test_data_points_are_read_only_in_admin(client, studies, sponsor):
    from tests.factories import DataPointFactory

    own, _ = studies
    point = DataPointFactory(study=own, visit__subject__site__study=own, raw_value="120")
    assert client.get("/admin/studies/datapoint/add/").status_code == 403
    changed = client.post(f"/admin/studies/datapoint/{point.pk}/change/", {"raw_value": "999"})
    assert changed.status_code in (200, 403)  # a read-only view at most: no form to save
    point.refresh_from_db()
    assert (point.raw_value, point.history.count()) == ("120", 1)


def test_a_sponsor_cannot_grant_access_to_another_study_or_to_themselves(client, studies, sponsor):
    own, other = studies
    colleague = UserFactory(username="colleague")
    to_other = client.post("/admin/studies/studymembership/add/", {
        "user": colleague.pk, "study": other.pk, "role": "data_manager", "is_active": "on"})
    assert to_other.status_code == 200  # re-rendered with an error, nothing saved
    own_membership = sponsor.memberships.get()
    widen = client.post(f"/admin/studies/studymembership/{own_membership.pk}/change/", {
        "user": sponsor.pk, "study": own.pk, "role": "data_manager", "is_active": "on"})
    assert widen.status_code == 200
    assert "You cannot change your own memberships" in widen.content.decode()
    assert list(StudyMembership.objects.filter(user__in=[sponsor, colleague]).values_list("role", "study_id")) == [
        ("sponsor", own.pk)]

    granted = client.post("/admin/studies/studymembership/add/", {
        "user": colleague.pk, "study": own.pk, "role": "data_manager", "is_active": "on"})
    assert granted.status_code == 302
    assert StudyMembership.objects.filter(user=colleague, study=own, role="data_manager").exists()


def test_history_pages_of_another_sponsors_records_answer_404(client, studies):
    own, other = studies
    secret = SiteFactory(study=other, name="Secret Clinic")
    history_id = secret.history.latest().history_id
    assert client.get(f"/admin/studies/site/{secret.pk}/history/").status_code == 404
    assert client.get(f"/admin/studies/site/{secret.pk}/history/{history_id}/").status_code == 404
    mine = SiteFactory(study=own, name="Own Clinic")
    assert client.get(f"/admin/studies/site/{mine.pk}/history/").status_code == 200


def test_list_filters_offer_only_studies_in_scope(client, studies):
    own, other = studies
    SiteFactory(study=own)
    SiteFactory(study=other)
    page = client.get("/admin/studies/site/").content.decode()
    assert "OTHER-1" not in page and "Other sponsor" not in page


def test_regulated_records_cannot_be_deleted_in_admin(client, studies):
    own, _ = studies
    site = SiteFactory(study=own)
    assert client.get(f"/admin/studies/site/{site.pk}/delete/").status_code == 403
    assert Site.objects.filter(pk=site.pk).exists()


def test_no_one_deletes_a_user_in_admin_accounts_are_deactivated(client, db):
    admin_user = get_user_model().objects.create_superuser("root_admin", "root@example.org", "pw-for-tests")
    target = UserFactory(username="leaver")
    client.force_login(admin_user)
    assert client.get(f"/admin/auth/user/{target.pk}/delete/").status_code == 403
    assert client.post(f"/admin/auth/user/{target.pk}/delete/", {"post": "yes"}).status_code == 403
    assert get_user_model().objects.filter(pk=target.pk).exists()
    assert client.get(f"/admin/auth/user/{target.pk}/change/").status_code == 200  # deactivating stays possible
