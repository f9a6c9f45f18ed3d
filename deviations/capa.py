"""CAPA: corrective and preventive actions with owner, due date and status, and a measured
effectiveness check: the site's rate of the CAPA's category (deviations per 1000 subject-days,
the KRI way) in the `effectiveness_window_days` after completion against as many days before it.
Effective when the rate dropped; too early while the window after completion has not passed."""

import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from deviations.models import Capa, Deviation
from deviations.rootcause import subject_days
from deviations.selectors import deviation_user_can
from studies.audit import set_audit
from studies.models import Site

EDITABLE = ("title", "corrective_action", "preventive_action", "owner", "due_on", "status",
            "effectiveness_window_days")


def _may(actor, capa_site: Site, capa: Capa | None = None) -> None:
    if capa is not None and capa.owner_id == actor.pk:
        return  # the owner updates their own action
    if not deviation_user_can(user=actor, capability="manage_capa", site=capa_site):
        raise PermissionDenied(f"Your role may not manage CAPAs at site {capa_site.number}.")


def capa_create(*, actor, site: Site, category: str, title: str, corrective_action: str, preventive_action: str,
                owner, due_on: datetime.date, reason: str, deviations=(), root_cause_analysis=None,
                effectiveness_window_days: int = 90) -> Capa:
    _may(actor, site)
    if not (reason or "").strip():
        raise ValidationError({"reason": "A reason is required."})
    if root_cause_analysis is not None and root_cause_analysis.site_id != site.pk:
        raise ValidationError({"root_cause_analysis": "The analysis is of another site."})
    capa = Capa(study=site.study, site=site, category=category, title=title, corrective_action=corrective_action,
                preventive_action=preventive_action, owner=owner, due_on=due_on, created_by=actor,
                root_cause_analysis=root_cause_analysis, effectiveness_window_days=effectiveness_window_days)
    capa.full_clean()
    linked = list(deviations)
    if any(d.site_id != site.pk for d in linked):
        raise ValidationError({"deviations": "Every deviation of a CAPA is of its site."})
    with transaction.atomic():
        set_audit(capa, actor=actor, reason=reason.strip())
        capa.save()
        capa.deviations.set(linked)
    return capa


def capa_update(*, capa: Capa, actor, reason: str, **changes) -> Capa:
    """Change the editable fields; status completed stamps the completion date."""
    if not (reason or "").strip():
        raise ValidationError({"reason": "A reason is required."})
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValidationError({name: "Not editable." for name in unknown})
    _may(actor, capa.site, capa)
    with transaction.atomic():
        capa = Capa.objects.select_for_update().get(pk=capa.pk)
        for name, value in changes.items():
            setattr(capa, name, value)
        if changes.get("status") == Capa.Status.COMPLETED and capa.completed_on is None:
            capa.completed_on = timezone.now().date()
        if "status" in changes and changes["status"] != Capa.Status.COMPLETED:
            capa.completed_on = None
        capa.full_clean()
        set_audit(capa, actor=actor, reason=reason.strip())
        capa.save()
    return capa


def _rate(capa: Capa, start: datetime.date, end: datetime.date) -> dict:
    count = (Deviation.objects.filter(site=capa.site, category=capa.category, occurred_on__gte=start,
                                      occurred_on__lte=end).exclude(resolution=Deviation.Resolution.WITHDRAWN)
             .count())
    days = float(subject_days(study=capa.study, start=start, end=end).get(capa.site_id, 0.0))
    return {"from": start.isoformat(), "to": end.isoformat(), "deviations": count, "subject_days": days,
            "rate_per_1000_days": round(1000 * count / days, 3) if days else None}


def capa_effectiveness_check(*, capa: Capa, actor, today: datetime.date | None = None) -> Capa:
    """Measure whether the site's rate of the category dropped after the CAPA was completed."""
    today = today or timezone.now().date()
    if capa.status != Capa.Status.COMPLETED or capa.completed_on is None:
        raise ValidationError({"status": "Only a completed CAPA can be checked for effectiveness."})
    window = datetime.timedelta(days=capa.effectiveness_window_days)
    done = capa.completed_on
    before = _rate(capa, done - window, done - datetime.timedelta(days=1))
    after_end = done + window - datetime.timedelta(days=1)
    after = _rate(capa, done, min(after_end, today))
    if after_end > today:
        result = Capa.Effectiveness.TOO_EARLY
    elif before["rate_per_1000_days"] is None or after["rate_per_1000_days"] is None:
        result = Capa.Effectiveness.TOO_EARLY
    else:
        result = (Capa.Effectiveness.EFFECTIVE if after["rate_per_1000_days"] < before["rate_per_1000_days"]
                  else Capa.Effectiveness.NOT_EFFECTIVE)
    with transaction.atomic():
        capa = Capa.objects.select_for_update().get(pk=capa.pk)
        capa.effectiveness, capa.effectiveness_checked_at = result, timezone.now()
        capa.effectiveness_figures = {"before": before, "after": after, "window_days": capa.effectiveness_window_days,
                                      "complete_after_window": after_end <= today}
        set_audit(capa, actor=actor, reason=f"Effectiveness measured: {Capa.Effectiveness(result).label}")
        capa.save()
    return capa


