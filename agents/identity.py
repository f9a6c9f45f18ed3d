"""Who an agent is in the audit trail.

Every regulated write records its actor (21 CFR Part 11). An agent acts as a system user
`agent.<name>`, so history rows it writes (studies.audit.set_audit(instance, actor=...))
name the agent, never a person who did not make the change. The user cannot log in.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

AGENT_USERNAME_PREFIX = "agent."


def agent_user(name: str) -> AbstractBaseUser:
    """The system user an agent acts as, created on first use."""
    if not name:
        raise ValueError("An agent user needs the agent's name.")
    User = get_user_model()
    user, created = User.objects.get_or_create(
        username=f"{AGENT_USERNAME_PREFIX}{name}",
        defaults={"first_name": "Agent", "last_name": name, "is_active": True},
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
