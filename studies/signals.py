"""Access-control audit (django-auditlog): memberships, per-object grants, account flags, and
logins, logouts and failed logins. Regulated study data is audited by simple-history instead."""

from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.contrib.contenttypes.models import ContentType
from django.dispatch import receiver
from guardian.models import GroupObjectPermission, UserObjectPermission
from simple_history.signals import post_create_historical_record

from studies.models import StudyMembership

User = get_user_model()

auditlog.register(StudyMembership)
auditlog.register(UserObjectPermission)
auditlog.register(GroupObjectPermission)
auditlog.register(User, include_fields=["username", "is_active", "is_staff", "is_superuser", "groups"],
                  m2m_fields={"groups"})


def _client(request) -> dict:
    if request is None:
        return {}
    return {"remote_addr": request.META.get("REMOTE_ADDR") or None}


def log_access_event(user, event: str, request) -> None:
    LogEntry.objects.log_create(
        user, force_log=True, action=LogEntry.Action.ACCESS, actor=user,
        changes={"event": [None, event]}, additional_data={"event": event}, **_client(request),
    )


@receiver(user_logged_in)
def _on_login(sender, request, user, **kwargs):
    log_access_event(user, "login", request)


@receiver(user_logged_out)
def _on_logout(sender, request, user, **kwargs):
    if user is not None:
        log_access_event(user, "logout", request)


@receiver(user_login_failed)
def _on_login_failed(sender, credentials, request=None, **kwargs):
    # The attempted user name is kept, never the password (Django already masks it in credentials).
    from studies.backends import locked_attempt  # noqa: PLC0415 (backends imports this module's models)

    event = "login_locked" if locked_attempt.get() else "login_failed"
    locked_attempt.set(False)
    username = str(credentials.get("username", ""))[:150]
    existing = User.objects.filter(username=username).first()
    LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(User),
        object_pk=str(existing.pk) if existing else "",
        object_id=existing.pk if existing else None,
        object_repr=username,
        action=LogEntry.Action.ACCESS,
        changes={"event": [None, event]},
        additional_data={"event": event, "username": username},
        **_client(request),
    )


@receiver(post_create_historical_record)
def _forget_audit_context(sender, instance, **kwargs):
    # An actor and reason describe one write. Left on the instance, they would be reused by the
    # next save() of the same object and attribute it to the wrong person and reason.
    for attribute in ("_change_reason", "_history_user"):
        instance.__dict__.pop(attribute, None)
