"""Writes to study data. One service per domain action, keyword-only, atomic, audited."""

from contextlib import nullcontext
from datetime import date, datetime

from auditlog.context import set_actor
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from studies.audit import ReasonRequired, set_audit
from studies.models import (
    SITE_ROLES,
    DataPoint,
    FormDefinition,
    ItemDefinition,
    Role,
    Site,
    Study,
    StudyMembership,
    Subject,
    SubjectVisit,
)

_NUMERIC = {ItemDefinition.DataType.INTEGER, ItemDefinition.DataType.FLOAT}


def typed_value(*, item: ItemDefinition, raw_value: str) -> tuple[float | None, date | None]:
    """The typed forms of a raw EDC value, checked against the item's data type.

    An empty value is a missing value, not an error (the required check deals with it)."""
    raw = (raw_value or "").strip()
    if raw == "":
        return None, None
    if item.data_type in _NUMERIC:
        try:
            number = float(raw)
        except ValueError:
            raise ValidationError({"raw_value": f"{raw!r} is not a number ({item.oid} is {item.data_type})."})
        if item.data_type == ItemDefinition.DataType.INTEGER and not number.is_integer():
            raise ValidationError({"raw_value": f"{raw!r} is not an integer ({item.oid})."})
        return number, None
    if item.data_type in (ItemDefinition.DataType.DATE, ItemDefinition.DataType.DATETIME):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise ValidationError({"raw_value": f"{raw!r} is not an ISO 8601 date ({item.oid})."})
        return None, parsed.date()
    return None, None


@transaction.atomic
def data_point_create(
    *, visit: SubjectVisit, form: FormDefinition, item: ItemDefinition, raw_value: str, actor,
    repeat_key: str = "1", entered_by: str = "", entered_at: datetime | None = None,
    reason: str = "Initial entry",
) -> DataPoint:
    number, day = typed_value(item=item, raw_value=raw_value)
    data_point = DataPoint(
        study_id=visit.study_id, subject_id=visit.subject_id, visit=visit, form=form, item=item,
        repeat_key=repeat_key, raw_value=raw_value, value_number=number, value_date=day,
        entered_by=entered_by or getattr(actor, "username", ""), entered_at=entered_at or timezone.now(),
    )
    data_point.full_clean(validate_unique=True)
    set_audit(data_point, actor=actor, reason=reason)
    data_point.save()
    return data_point


def sdv_state_after_change(state: str) -> str:
    """The SDV state of a value that has just changed: verified (or flagged) against a source that
    no longer shows it, it is to verify again. The one rule every write path applies (this
    service, the import writer behind file imports and EDC syncs); the data point's history row
    of the change records it with the change's actor and reason."""
    if state in (DataPoint.SdvState.VERIFIED, DataPoint.SdvState.DISCREPANCY):
        return DataPoint.SdvState.TO_VERIFY
    return state


class StaleVersion(ValueError):
    """The value changed since the caller read it: applying the change would overwrite unseen work."""


@transaction.atomic
def data_point_update(*, data_point: DataPoint, raw_value: str, actor, reason: str,
                      expected_version: int | None = None) -> DataPoint:
    """Change a value. The reason is mandatory (21 CFR Part 11); a verified value goes back to
    "to verify" because the source it was verified against no longer matches. With
    `expected_version`, the change is refused if someone else changed the value first."""
    if not reason or not reason.strip():
        raise ReasonRequired("A reason for change is required to change a data point.")
    # Lock the row: two concurrent edits must not both read version N and write N + 1. Only the
    # data point's row: an import holds its item FOR KEY SHARE until it commits (studies/integrity.py).
    data_point = DataPoint.objects.select_for_update(of=("self",)).select_related("item").get(pk=data_point.pk)
    if expected_version is not None and expected_version != data_point.version:
        raise StaleVersion(f"The value changed since version {expected_version} (now version "
                           f"{data_point.version}); review it and try again.")
    if raw_value == data_point.raw_value:
        return data_point
    number, day = typed_value(item=data_point.item, raw_value=raw_value)
    data_point.raw_value = raw_value
    data_point.value_number = number
    data_point.value_date = day
    data_point.version += 1
    data_point.entered_by = getattr(actor, "username", "")
    data_point.entered_at = timezone.now()
    data_point.sdv_state = sdv_state_after_change(data_point.sdv_state)
    set_audit(data_point, actor=actor, reason=reason.strip())
    data_point.save()
    return data_point


@transaction.atomic
def membership_grant(*, user, study: Study, role: str, site: Site | None = None, actor=None) -> StudyMembership:
    """Give `user` a role in `study` (site roles need their site). Audited by django-auditlog."""
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    membership = StudyMembership(user=user, study=study, role=role, site=site if role in SITE_ROLES else None)
    membership.full_clean()
    with _as_actor(actor):
        membership.save()
    return membership


@transaction.atomic
def cra_site_assign(*, cra, site: Site, actor=None) -> None:
    """Grant a CRA one site (a per-object permission, finer than the study membership)."""
    if not StudyMembership.objects.filter(user=cra, study_id=site.study_id, role=Role.CRA, is_active=True).exists():
        raise ValidationError("The user is not a CRA of this site's study.")
    with _as_actor(actor):
        assign_perm("studies.monitor_site", cra, site)


@transaction.atomic
def cra_site_unassign(*, cra, site: Site, actor=None) -> None:
    with _as_actor(actor):
        remove_perm("studies.monitor_site", cra, site)


def _as_actor(actor):
    """Name `actor` in the access-control audit log for writes made outside a request (commands,
    agents); inside a request django-auditlog's middleware already names the user."""
    return set_actor(actor) if getattr(actor, "pk", None) else nullcontext()


@transaction.atomic
def subject_create(*, site: Site, subject_id: str, actor, reason: str = "Subject registered", **fields) -> Subject:
    subject = Subject(study_id=site.study_id, site=site, subject_id=subject_id, **fields)
    subject.full_clean()
    set_audit(subject, actor=actor, reason=reason)
    subject.save()
    return subject
