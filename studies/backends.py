"""Account lockout after repeated failed logins (21 CFR Part 11 / Annex 11 access control).

The failed attempts are the access audit rows django-auditlog already keeps (studies/signals.py),
so the lockout needs no state of its own: N failures for a user name within the window, since
its last successful login, lock it until the window has passed."""

from contextvars import ContextVar
from datetime import timedelta

from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.utils import timezone

# Set while a locked account is refused, so the failed-login audit row says "locked", and a
# refusal by the lock does not itself count as a failure (which would keep the lock on for ever).
locked_attempt: ContextVar[bool] = ContextVar("locked_attempt", default=False)


def recent_failed_logins(username: str) -> int:
    since = timezone.now() - timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES)
    access = LogEntry.objects.filter(action=LogEntry.Action.ACCESS, timestamp__gte=since)
    last_login = (
        access.filter(object_repr=username, additional_data__event__in=["login", "login_api_token"])
        .order_by("-timestamp").values_list("timestamp", flat=True).first()
    )
    failures = access.filter(additional_data__event="login_failed", additional_data__username=username)
    if last_login is not None:
        failures = failures.filter(timestamp__gt=last_login)
    return failures.count()


class LockoutModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username and recent_failed_logins(username) >= settings.LOGIN_LOCKOUT_ATTEMPTS:
            # PermissionDenied stops every backend; Django still sends user_login_failed.
            locked_attempt.set(True)
            raise PermissionDenied("Account locked after repeated failed logins.")
        return super().authenticate(request, username=username, password=password, **kwargs)
