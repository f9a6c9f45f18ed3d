"""Reads of the monitoring plan, scoped by the user's access at the source: visits at the sites the
user sees (study-wide roles: every site; site staff: their own site; CRAs: the sites granted to
them), plus a CRA's own visits. Who may act on a visit: its monitor, the CRAs of its site and the
study's sponsors / study managers."""

from django.db.models import Count, Q, QuerySet

from sdv.models import SdvPlan
from sdv.monitoring.models import Monitor, MonitoringPlan, MonitoringTrip, MonitoringVisit
from studies.models import DataPoint, Role, StudyMembership
from studies.selectors import roles_for_site, site_list, study_roles

PLAN_READERS = frozenset({Role.SPONSOR, Role.DATA_MANAGER, Role.MEDICAL_MONITOR, Role.AUDITOR, Role.CRA})


def monitoring_visit_list(*, user) -> QuerySet[MonitoringVisit]:
    if not user.is_authenticated:
        return MonitoringVisit.objects.none()
    active = StudyMembership.objects.filter(user=user, is_active=True).values("study_id")
    scope = Q(site__in=site_list(user=user))
    if not user.is_superuser:
        scope |= Q(monitor__user=user, study_id__in=active)
    return (MonitoringVisit.objects.filter(scope).select_related("site", "monitor__user", "trip", "study", "plan")
            .distinct())


def monitor_feed_visits(*, monitor: Monitor) -> QuerySet[MonitoringVisit] | None:
    """The visits of a monitor's .ics feed, scoped as the monitor's own reads are (the feed's URL
    stands in for their login): None once their account is deactivated or they are no longer a
    CRA of the study, so a subscription stops with the access."""
    user = monitor.user
    if not user.is_active or not (user.is_superuser or StudyMembership.objects.filter(
            user=user, study_id=monitor.study_id, role=Role.CRA, is_active=True).exists()):
        return None
    return monitoring_visit_list(user=user).filter(monitor=monitor)


def monitoring_trip_list(*, user) -> QuerySet[MonitoringTrip]:
    return MonitoringTrip.objects.filter(visits__in=monitoring_visit_list(user=user)).distinct()


def visit_manageable(*, user, visit: MonitoringVisit) -> bool:
    """Confirm, move, cancel, complete and report: the visit's own monitor, a CRA of its site, a
    sponsor / study manager of the study."""
    if user.is_superuser:
        return True
    if visit.monitor.user_id == user.pk and StudyMembership.objects.filter(
            user=user, study_id=visit.study_id, role=Role.CRA, is_active=True).exists():
        return True
    return bool(roles_for_site(user=user, site=visit.site) & {Role.SPONSOR, Role.CRA})


def plan_readable(*, user, study) -> bool:
    """The study's plan view (every monitor's calendar, the map, the load): study-wide roles and
    CRAs (who see every monitor's calendar, but the visits of their own sites only). Site staff
    see their own site's visits in the API, not the plan."""
    return user.is_superuser or bool(study_roles(user=user, study=study) & PLAN_READERS)


def plan_manageable(*, user, study) -> bool:
    """Re-plan the study by hand: sponsors / study managers."""
    return user.is_superuser or Role.SPONSOR in study_roles(user=user, study=study)


def monitors_of(*, user, study) -> QuerySet[Monitor]:
    return Monitor.objects.filter(study=study).select_related("user").order_by("user__username")


def plan_latest(*, study) -> MonitoringPlan | None:
    return MonitoringPlan.objects.filter(study=study).order_by("-version").first()


def sdv_progress(*, site) -> dict:
    """The site's source data verification as it stands (sdv/sdv_plan.py's selections and the data
    points' SDV state): what the monitor has to verify on a visit and how far it has got."""
    plan = SdvPlan.objects.filter(site=site).first()
    states = dict(DataPoint.objects.filter(subject__site=site, sdv_selection__isnull=False)
                  .values_list("sdv_state").annotate(n=Count("pk")).order_by())
    selected = sum(states.values())
    verified = states.get(DataPoint.SdvState.VERIFIED, 0)
    return {"tier": plan.tier if plan else None, "share": plan.share if plan else None, "selected": selected,
            "to_verify": states.get(DataPoint.SdvState.TO_VERIFY, 0), "verified": verified,
            "discrepancy": states.get(DataPoint.SdvState.DISCREPANCY, 0),
            "percent_verified": round(100 * verified / selected, 1) if selected else None}
