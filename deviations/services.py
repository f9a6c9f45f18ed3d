"""People's work on deviations, each an audited, atomic service that checks the actor's role:
report one (site staff, CRAs), review it (open -> under_review -> closed, with reasons; data
managers and medical monitors), re-code it or change its importance (the detector then keeps the
person's decision), set its root cause. Detection is deviations.detection; CAPA deviations.capa."""

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from deviations.coding import code, term_for
from deviations.models import Deviation, RootCause
from deviations.plan import importance_of, plan_latest
from deviations.selectors import deviation_user_can
from studies.audit import set_audit
from studies.models import Site, Subject, SubjectVisit

# transition -> (states it starts from, state it leads to)
TRANSITIONS = {
    "review": ((Deviation.Status.OPEN,), Deviation.Status.UNDER_REVIEW),
    "close": ((Deviation.Status.OPEN, Deviation.Status.UNDER_REVIEW), Deviation.Status.CLOSED),
    "reopen": ((Deviation.Status.CLOSED, Deviation.Status.UNDER_REVIEW), Deviation.Status.OPEN),
}


def _reason(reason: str) -> str:
    if not (reason or "").strip():
        raise ValidationError({"reason": "A reason is required."})
    return reason.strip()


def _require(actor, capability: str, site: Site, what: str) -> None:
    if not deviation_user_can(user=actor, capability=capability, site=site):
        raise PermissionDenied(f"Your role may not {what} at site {site.number}.")


def deviation_report(*, actor, site: Site, category: str, description: str, subject: Subject | None = None,
                     visit: SubjectVisit | None = None, occurred_on=None, dvdecod: str = "", term: str = "",
                     importance: str = "") -> Deviation:
    """A deviation reported by a person. Coded from the vocabulary (the given DVDECOD, else the
    category's default term); importance as given, else the plan's (or ICH E3's) for the category."""
    _require(actor, "report_deviation", site, "report deviations")
    if category not in Deviation.Category.values:
        raise ValidationError({"category": f"One of {', '.join(Deviation.Category.values)}."})
    if not (description or "").strip():
        raise ValidationError({"description": "Describe the deviation."})
    if subject is not None and subject.site_id != site.pk:
        raise ValidationError({"subject": "The subject belongs to another site."})
    if visit is not None and (subject is None or visit.subject_id != subject.pk):
        raise ValidationError({"visit": "The visit belongs to another subject."})
    today = timezone.now().date()
    if occurred_on and occurred_on > today:
        raise ValidationError({"occurred_on": "A deviation cannot occur in the future."})
    coding = code(category)
    if dvdecod:
        coding = term_for(dvdecod)
        if coding is None:
            raise ValidationError({"dvdecod": f"{dvdecod!r} is not a DVDECOD of the vocabulary."})
    plan = plan_latest(study=site.study)
    if importance and importance not in Deviation.Importance.values:
        raise ValidationError({"importance": f"One of {', '.join(Deviation.Importance.values)}."})
    deviation = Deviation(
        study=site.study, site=site, subject=subject, visit=visit, category=category, term=term[:255],
        importance=importance or importance_of(plan.content if plan else {}, category),
        importance_by_person=bool(importance), coding_by_person=bool(dvdecod), source=Deviation.Source.MANUAL,
        description=description.strip(), occurred_on=occurred_on or (visit.actual_date if visit else None),
        detected_on=today, reported_by=actor, **coding)
    deviation.full_clean()
    set_audit(deviation, actor=actor, reason="Deviation reported")
    with transaction.atomic():  # the deviation and its history row, or neither
        deviation.save()
    return deviation


def deviation_transition(*, deviation: Deviation, actor, transition: str, reason: str,
                         resolution: str = Deviation.Resolution.CONFIRMED) -> Deviation:
    """open -> under_review -> closed (or closed straight from open), reopen; each with a reason."""
    if transition not in TRANSITIONS:
        raise ValidationError({"transition": f"One of {', '.join(TRANSITIONS)}."})
    reason = _reason(reason)
    _require(actor, "review_deviation", deviation.site, "review deviations")
    starts, target = TRANSITIONS[transition]
    with transaction.atomic():
        deviation = Deviation.objects.select_for_update().get(pk=deviation.pk)
        if deviation.status not in starts:
            raise ValidationError({"status": f"A deviation {deviation.get_status_display().lower()} cannot be "
                                             f"{'re-opened' if transition == 'reopen' else transition + 'ed'}."})
        deviation.status = target
        if transition in ("close", "reopen"):  # a person's decision: the detector keeps it
            deviation.status_by_person = True
        if target == Deviation.Status.CLOSED:
            if resolution not in Deviation.Resolution.values:
                raise ValidationError({"resolution": f"One of {', '.join(Deviation.Resolution.values)}."})
            deviation.resolution, deviation.closed_on = resolution, timezone.now().date()
        elif target == Deviation.Status.OPEN:
            deviation.resolution, deviation.closed_on = "", None
        set_audit(deviation, actor=actor, reason=reason)
        deviation.save()
    return deviation


def deviations_bulk_transition(*, deviations: list[Deviation], actor, transition: str, reason: str,
                               resolution: str = Deviation.Resolution.CONFIRMED) -> list[Deviation]:
    """One transition with one reason on many: all or nothing."""
    with transaction.atomic():
        return [deviation_transition(deviation=d, actor=actor, transition=transition, reason=reason,
                                     resolution=resolution) for d in deviations]


def deviation_recode(*, deviation: Deviation, actor, reason: str, dvdecod: str | None = None,
                     dvcat: str | None = None, importance: str | None = None) -> Deviation:
    """A person's coding (a DVDECOD of the vocabulary) and/or importance, kept from then on."""
    reason = _reason(reason)
    _require(actor, "review_deviation", deviation.site, "code deviations")
    with transaction.atomic():
        deviation = Deviation.objects.select_for_update().get(pk=deviation.pk)
        if dvdecod:
            row = term_for(dvdecod, dvcat or None)
            if row is None:
                raise ValidationError({"dvdecod": f"{dvdecod!r} is not a DVDECOD of the vocabulary."})
            deviation.dvcat, deviation.dvdecod, deviation.dvterm = row["dvcat"], row["dvdecod"], row["dvterm"]
            deviation.coding_by_person = True
        if importance:
            if importance not in Deviation.Importance.values:
                raise ValidationError({"importance": f"One of {', '.join(Deviation.Importance.values)}."})
            deviation.importance, deviation.importance_by_person = importance, True
        if not dvdecod and not importance:
            raise ValidationError({"dvdecod": "Give a coded term or an importance."})
        set_audit(deviation, actor=actor, reason=reason)
        deviation.save()
    return deviation


def deviation_root_cause_set(*, deviation: Deviation, actor, root_cause: str, reason: str) -> Deviation:
    reason = _reason(reason)
    _require(actor, "decide_root_cause", deviation.site, "set root causes")
    if root_cause not in RootCause.values:
        raise ValidationError({"root_cause": f"One of {', '.join(RootCause.values)}."})
    with transaction.atomic():
        deviation = Deviation.objects.select_for_update().get(pk=deviation.pk)
        deviation.root_cause = root_cause
        set_audit(deviation, actor=actor, reason=reason)
        deviation.save()
    return deviation
