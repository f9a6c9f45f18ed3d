"""Template helpers of the UI shell."""

from django import template

from studies.models import Role, StudyMembership

register = template.Library()

# CSS modifier of a state badge, by the stored state value. Unknown states fall back to neutral.
_BADGE_TONES = {
    # SDV
    "not_required": "neutral", "to_verify": "warning", "verified": "success", "discrepancy": "danger",
    # study and subject status
    "setup": "neutral", "active": "success", "closed": "neutral", "screening": "info",
    "screen_failed": "neutral", "enrolled": "success", "completed": "info", "discontinued": "warning",
    # imports
    "pending": "neutral", "running": "info", "succeeded": "success", "failed": "danger",
    # severity of a query or discrepancy
    "critical": "danger", "major": "warning", "minor": "neutral",
    # history change type (simple-history)
    "+": "info", "~": "warning", "-": "danger",
}


@register.simple_tag(takes_context=True)
def user_role_labels(context) -> str:
    """The roles the logged-in user holds in any study, for the navigation bar."""
    user = context["request"].user
    if not user.is_authenticated:
        return ""
    roles = {role for role in StudyMembership.objects.filter(user=user, is_active=True).values_list("role", flat=True)}
    labels = sorted(Role(role).label for role in roles)
    if user.is_superuser:
        labels.insert(0, "Superuser")
    return ", ".join(labels)


@register.inclusion_tag("includes/badge.html")
def badge(value: str, label: str):
    return {"tone": _BADGE_TONES.get(value, "neutral"), "label": label}


@register.filter
def get_item(mapping: dict, key: str):
    """mapping[key] in a template (a filter's chosen value by the filter's name)."""
    return mapping.get(key, "") if hasattr(mapping, "get") else ""
