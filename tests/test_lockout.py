"""Repeated failed logins lock the account for a while; the refusals are audited."""

from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import UserFactory


@pytest.fixture
def user(db, settings):
    settings.LOGIN_LOCKOUT_ATTEMPTS = 3
    settings.LOGIN_LOCKOUT_MINUTES = 15
    return UserFactory(username="site_user")


def test_the_right_password_is_refused_after_too_many_failures(client, user):
    for _ in range(3):
        assert not client.login(username="site_user", password="wrong")
    assert not client.login(username="site_user", password="pw-for-tests")
    assert LogEntry.objects.filter(additional_data__event="login_failed").count() == 3
    assert LogEntry.objects.filter(additional_data__event="login_locked").count() == 1
    assert not LogEntry.objects.filter(additional_data__event="login").exists()


def test_attempts_refused_by_the_lock_do_not_extend_it(client, user):
    for _ in range(3):
        client.login(username="site_user", password="wrong")
    failures = LogEntry.objects.filter(additional_data__event="login_failed")
    failures.update(timestamp=timezone.now() - timedelta(minutes=10))
    for _ in range(5):  # someone keeps trying while it is locked
        assert not client.login(username="site_user", password="wrong")
    # Only the three real failures count, and they age out of the window as usual.
    failures.update(timestamp=timezone.now() - timedelta(minutes=16))
    assert client.login(username="site_user", password="pw-for-tests")


def test_the_lock_also_holds_for_api_tokens(user):
    client = APIClient()
    for _ in range(3):
        client.post("/api/v1/auth/token/", {"username": "site_user", "password": "wrong"}, format="json")
    response = client.post("/api/v1/auth/token/", {"username": "site_user", "password": "pw-for-tests"},
                           format="json")
    assert response.status_code == 401
    assert "access" not in response.json()


def test_the_lock_ends_when_the_window_has_passed(client, user):
    for _ in range(3):
        client.login(username="site_user", password="wrong")
    # Age the failures past the window (the clock is the outside world here).
    LogEntry.objects.filter(additional_data__event="login_failed").update(
        timestamp=timezone.now() - timedelta(minutes=16)
    )
    assert client.login(username="site_user", password="pw-for-tests")


def test_a_successful_login_resets_the_count(client, user):
    for _ in range(2):
        client.login(username="site_user", password="wrong")
    assert client.login(username="site_user", password="pw-for-tests")
    client.logout()
    for _ in range(2):
        client.login(username="site_user", password="wrong")
    assert client.login(username="site_user", password="pw-for-tests")


def test_failures_of_another_user_name_do_not_lock_this_one(client, user):
    UserFactory(username="other_user")
    for _ in range(5):
        client.login(username="other_user", password="wrong")
    assert client.login(username="site_user", password="pw-for-tests")
