"""Writes of the monitoring plan: scheduling (the MonitoringOrchestrator's service), and the
confirm, move, cancel and complete actions on a visit. Atomic, audited with actor and reason; a
study's schedulings, moves and plan imports run one at a time (the row of its plan in force is
locked: see plan_lock)."""

import datetime
import time

import structlog
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import get_users_with_perms

from sdv.models import SiteRiskAssessment
from sdv.monitoring import naive as naive_baseline
from sdv.monitoring.checker import check
from sdv.monitoring.models import Monitor, MonitoringPlan, MonitoringTrip, MonitoringVisit, VisitReport
from sdv.monitoring.problem import MonitorSpec, Problem, SiteNeed, Visit
from sdv.monitoring.solver import PlanInfeasible, solve
from sdv.monitoring.travel import trips
from studies.audit import set_audit
from studies.models import Site, Study
from studies.services import cra_site_assign

logger = structlog.get_logger(__name__)
DEFAULT_TIME_LIMIT = 10.0


class MonitoringPlanError(ValidationError):
    """A scheduling or a change to a visit that cannot be made, with why (nothing was changed)."""


class MoveRefused(MonitoringPlanError):
    """A move that would break a constraint of the plan: names the constraint and every breach."""

    def __init__(self, constraint: str, message: str, breaches: list[str] | None = None):
        super().__init__({"date": message})
        self.constraint, self.message_text, self.breaches = constraint, message, breaches or [message]


def plan_in_force(*, study: Study) -> MonitoringPlan | None:
    return MonitoringPlan.objects.filter(study=study).order_by("-version").first()


def plan_lock(*, study: Study) -> MonitoringPlan | None:
    """The plan in force with its row locked until the transaction ends: the study's schedulings,
    moves and plan imports wait for each other. Not the study row: imports of clinical data and
    deviation detection lock that one, and a scheduling holds its lock for the whole solver run.
    A plan import that committed while we waited made a newer plan the one in force: lock that."""
    while True:
        latest = plan_in_force(study=study)
        if latest is None:
            return None
        locked = MonitoringPlan.objects.select_for_update().get(pk=latest.pk)
        if plan_in_force(study=study).pk == locked.pk:
            return locked


def site_tiers(*, study: Study, plan: MonitoringPlan) -> dict[int, tuple[str, str]]:
    """Each site's tier and where it comes from: the plan's override (with its reason), else the
    latest risk assessment, else high (not assessed yet: the most cautious plan, as SDV plans do)."""
    overrides = {o.site_id: o for o in plan.tier_overrides.all()}
    latest = {}
    for assessment in (SiteRiskAssessment.objects.filter(site__study=study).select_related("snapshot")
                       .order_by("site_id", "-snapshot__snapshot_date")):
        latest.setdefault(assessment.site_id, assessment)
    out = {}
    for site in Site.objects.filter(study=study):
        if site.pk in overrides:
            o = overrides[site.pk]
            out[site.pk] = (o.tier, f"plan v{plan.version} override{': ' + o.reason if o.reason else ''}")
        elif site.pk in latest:
            a = latest[site.pk]
            out[site.pk] = (a.tier, f"risk assessment of {a.snapshot.snapshot_date}, score {a.risk_score:.0f}")
        else:
            out[site.pk] = ("high", "not assessed yet: planned as high risk")
    return out


def _frequency_text(rule: dict) -> str:
    parts = []
    if rule.get("on_site_every_weeks"):
        parts.append(f"on-site every {rule['on_site_every_weeks']} weeks")
    if rule.get("remote_every_weeks"):
        parts.append(f"a contact every {rule['remote_every_weeks']} weeks (remote, or on-site)")
    return " and ".join(parts) or "no visit required"


def problem_build(*, study: Study, plan: MonitoringPlan, today: datetime.date) -> tuple[Problem, dict]:
    """The scheduling problem of the plan in force, with the study's visits as they stand."""
    tiers = site_tiers(study=study, plan=plan)
    sites = {site.pk: site for site in Site.objects.filter(study=study)}
    previous_tiers = (plan.last_result or {}).get("tiers", {})
    needs, reasons, unplanned = [], {}, []
    for site_id, (tier, source) in sorted(tiers.items()):
        site = sites[site_id]
        rule = plan.frequency.get(tier, {})
        if site.latitude is None or site.longitude is None or not site.country:
            # Never in a plan: no location to travel to. Said in the figures and shown as a
            # breach on the plan view, never left out in silence.
            if rule.get("on_site_every_weeks") or rule.get("remote_every_weeks"):
                unplanned.append({"site": site.number, "tier": tier, "why": (
                    f"no location: site {site.number} ({tier} risk, {_frequency_text(rule)}) is in no monitoring "
                    "plan yet; add it to the plan's sites with its city, country, lat and lon")})
            continue
        reason = f"{tier} risk ({source}): {_frequency_text(rule)}"
        before = previous_tiers.get(site.number)
        if before and before != tier:
            reason = f"risk change {before} -> {tier}: {reason}"
        reasons[site.number] = reason
        needs.append(SiteNeed(number=site.number, country=site.country, lat=float(site.latitude),
                              lon=float(site.longitude), tier=tier, on_site_every=rule.get("on_site_every_weeks"),
                              remote_every=rule.get("remote_every_weeks"), reason=reason))
    monitors = [MonitorSpec(username=m.user.username, lat=float(m.home_latitude), lon=float(m.home_longitude),
                            countries=frozenset(m.countries), days_per_week=m.days_per_week,
                            remote_hours_per_week=m.remote_hours_per_week,
                            days_off=frozenset(datetime.date.fromisoformat(d) for d in m.days_off))
                for m in Monitor.objects.filter(study=study, active=True).select_related("user")]
    problem = Problem(start=plan.start, horizon_weeks=plan.horizon_weeks, on_site_days=plan.on_site_days,
                      sites=needs, monitors=monitors, remote_visit_hours=plan.remote_visit_hours, not_before=today,
                      road_km=plan.document.get("road_km", {}))
    rows = list(MonitoringVisit.objects.filter(study=study, date__gte=plan.start, date__lt=problem.end)
                .exclude(status=MonitoringVisit.Status.CANCELLED).select_related("site", "monitor__user"))
    problem.visits = [_visit_of(row) for row in rows]
    return problem, {"rows": {row.pk: row for row in rows}, "reasons": reasons, "unplanned": unplanned,
                     "tiers": {sites[k].number: v[0] for k, v in tiers.items()}}


def _visit_of(row: MonitoringVisit) -> Visit:
    return Visit(site=row.site.number, monitor=row.monitor.user.username, date=row.date, kind=row.kind,
                 status=row.status, locked=row.locked, id=row.pk)


@transaction.atomic
def monitoring_plan_schedule(*, study: Study, actor, today: datetime.date | None = None,
                             time_limit: float = DEFAULT_TIME_LIMIT, workers: int = 2) -> dict:
    """Plan (or re-plan) the study's visits from the plan in force and the sites' tiers: visits
    done or confirmed, moved by a person, or in the past are kept; other planned visits stay where
    they are unless they must move; what the tiers no longer need is cancelled. The result is
    checked by the independent checker before anything is stored. Returns the figures."""
    started = time.perf_counter()
    plan = plan_lock(study=study)
    if plan is None:
        return {"skipped": "no monitoring plan (import one with import_monitoring_plan)"}
    today = today or timezone.localdate()
    problem, context = problem_build(study=study, plan=plan, today=today)
    try:
        result = solve(problem, time_limit=time_limit, workers=workers)
    except PlanInfeasible as exc:
        raise MonitoringPlanError({"plan": f"{exc} — {'; '.join(exc.problems)}"}) from exc
    breaches = [b for b in check(problem, result.visits, previous=problem.visits) if not b.past]
    if breaches:  # the solver's guarantees failed: store nothing, say what
        raise MonitoringPlanError({"plan": "the plan found breaks " + "; ".join(b.message for b in breaches[:5])})
    changes = _apply(study, plan, problem, result.visits, context, actor=actor)
    trip_count = _trips_refresh(study, plan, actor=actor)
    _grant_sites(study, actor=actor)
    on_site = [v for v in result.visits if v.kind == "on_site"]
    travel = sum(MonitoringTrip.objects.filter(study=study, start_date__gte=plan.start,
                                               start_date__lt=problem.end).values_list("travel_km", flat=True))
    naive = naive_baseline.naive_plan(problem)
    figures = {
        "plan_version": plan.version, "status": result.status, "solver_seconds": round(result.seconds, 3),
        "visits": len(result.visits), "on_site": len(on_site), "remote": len(result.visits) - len(on_site),
        "trips": trip_count, "travel_km": round(travel, 1), "naive_km": round(naive["travel_km"], 1),
        "naive_on_site": naive["on_site_visits"],
        "travel_ratio": round(travel / naive["travel_km"], 3) if naive["travel_km"] else None,
        "round_trips_km": round(naive_baseline.round_trips_km(problem, on_site), 1),
        "breaches": 0, **changes, "today": today.isoformat(), "tiers": context["tiers"],
        "unplanned": context["unplanned"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    plan.last_result = figures
    set_audit(plan, actor=actor, reason=f"Scheduled: {figures['visits']} visits, {figures['travel_km']} km")
    plan.save()
    logger.info("monitoring_plan_scheduled", study_id=study.pk,
                **{k: v for k, v in figures.items() if k not in ("tiers", "unplanned")},
                unplanned_sites=[u["site"] for u in context["unplanned"]])
    return figures


def _apply(study, plan, problem, visits, context, *, actor) -> dict:
    rows, reasons = context["rows"], context["reasons"]
    monitors = {m.user.username: m for m in Monitor.objects.filter(study=study).select_related("user")}
    sites = {s.number: s for s in Site.objects.filter(study=study)}
    kept_ids = {v.id for v in visits if v.id is not None}
    dropped = [rows[v.id] for v in problem.visits if v.id not in kept_ids]
    counts = {"kept": len(kept_ids), "moved": 0, "added": 0, "cancelled": 0}
    for visit in (v for v in visits if v.id is None):
        same = [row for row in dropped if row.site.number == visit.site and row.kind == visit.kind]
        if same:
            row = min(same, key=lambda r: abs((r.date - visit.date).days))
            dropped.remove(row)
            why = f"Re-planned: moved from {row.date} ({row.monitor.user.username}) to {visit.date}"
            row.date, row.monitor, row.reason = visit.date, monitors[visit.monitor], reasons[visit.site]
            row.plan = plan
            set_audit(row, actor=actor, reason=why)
            row.save()
            counts["moved"] += 1
            continue
        row = MonitoringVisit(study=study, site=sites[visit.site], monitor=monitors[visit.monitor], date=visit.date,
                              days=problem.on_site_days if visit.kind == "on_site" else 1, kind=visit.kind,
                              reason=reasons[visit.site], plan=plan)
        set_audit(row, actor=actor, reason=f"Planned from monitoring plan v{plan.version}: {reasons[visit.site]}")
        row.save()
        counts["added"] += 1
    for row in dropped:
        if row.status in MonitoringVisit.KEPT or row.locked:
            continue  # never: the solver keeps them (checked above); guard all the same
        row.status = MonitoringVisit.Status.CANCELLED
        why = reasons.get(row.site.number, "site out of the plan")
        set_audit(row, actor=actor, reason=f"Re-planned: no longer needed ({why})")
        row.save()
        counts["cancelled"] += 1
    # Planned visits past the horizon of a shorter plan are no longer part of any plan.
    for row in MonitoringVisit.objects.filter(study=study, status=MonitoringVisit.Status.PLANNED, locked=False,
                                              date__gte=problem.end):
        row.status = MonitoringVisit.Status.CANCELLED
        set_audit(row, actor=actor, reason=f"Re-planned: after the horizon of plan v{plan.version}")
        row.save()
        counts["cancelled"] += 1
    return counts


def _trips_refresh(study: Study, plan: MonitoringPlan, *, actor) -> int:
    """Trips and each visit's leg, from the on-site visits as they now stand."""
    problem_distances = _distances(study, plan)
    rows = list(MonitoringVisit.objects.filter(study=study, kind=MonitoringVisit.Kind.ON_SITE)
                .exclude(status=MonitoringVisit.Status.CANCELLED).select_related("site", "monitor__user"))
    by_id = {row.pk: row for row in rows}
    visits = [_visit_of(row) for row in rows]
    legs = trips(visits, days=plan.on_site_days, distances=problem_distances)
    existing = {(t.monitor_id, t.start_date, t.end_date): t for t in MonitoringTrip.objects.filter(study=study)}
    used = set()
    for leg in legs:
        monitor = by_id[leg.visits[0].id].monitor
        trip = existing.get((monitor.pk, leg.start, leg.end))
        if trip is None:
            trip = MonitoringTrip(study=study, monitor=monitor, start_date=leg.start, end_date=leg.end)
        if trip.pk is None or abs(trip.travel_km - leg.travel_km) > 1e-6:
            trip.travel_km = round(leg.travel_km, 3)
            set_audit(trip, actor=actor, reason="Trips of the plan")
            trip.save()
        used.add(trip.pk)
        for visit, km in zip(leg.visits, leg.legs, strict=True):
            row = by_id[visit.id]
            if row.trip_id != trip.pk or abs(row.travel_km - km) > 1e-6:
                row.trip, row.travel_km = trip, round(km, 3)
                set_audit(row, actor=actor, reason=f"Trip {trip.pk}: leg of {km:.1f} km")
                row.save()
    for row in MonitoringVisit.objects.filter(study=study, trip__isnull=False).exclude(trip_id__in=used):
        row.trip, row.travel_km = None, 0
        set_audit(row, actor=actor, reason="No longer part of a trip")
        row.save()
    for trip in MonitoringTrip.objects.filter(study=study).exclude(pk__in=used):
        set_audit(trip, actor=actor, reason="Trip no longer in the plan")
        trip.delete()
    return len(legs)


def _distances(study: Study, plan: MonitoringPlan):
    from sdv.monitoring.travel import Distances, home

    points = {s.number: (float(s.latitude), float(s.longitude)) for s in Site.objects.filter(study=study)
              if s.latitude is not None and s.longitude is not None}
    points |= {home(m.user.username): (float(m.home_latitude), float(m.home_longitude))
               for m in Monitor.objects.filter(study=study).select_related("user")}
    return Distances(points=points, road_km=plan.document.get("road_km", {}))


def _grant_sites(study: Study, *, actor) -> None:
    """A monitor planned at a site is one of its CRAs (the guardian grant the site's pages and
    SDV read), audited in the access-control log. Grants are never withdrawn here."""
    pairs = set(MonitoringVisit.objects.filter(study=study).exclude(status=MonitoringVisit.Status.CANCELLED)
                .values_list("monitor__user_id", "site_id"))
    for site in Site.objects.filter(study=study, pk__in={site_id for _u, site_id in pairs}):
        granted = {u.pk for u in get_users_with_perms(site, only_with_perms_in=["monitor_site"],
                                                      with_superusers=False)}
        for user_id, site_id in pairs:
            if site_id == site.pk and user_id not in granted:
                cra_site_assign(cra=Monitor.objects.get(study=study, user_id=user_id).user, site=site, actor=actor)


# --- Actions on a visit --------------------------------------------------------------------------
def _locked_visit(visit: MonitoringVisit) -> MonitoringVisit:
    plan_lock(study=visit.study)  # a visit changes only between schedulings, never during one
    return MonitoringVisit.objects.select_related("site", "monitor__user", "plan").get(pk=visit.pk)


def _require(visit: MonitoringVisit, statuses, verb: str) -> None:
    if visit.status not in statuses:
        raise MonitoringPlanError({"status": f"a {visit.get_status_display().lower()} visit cannot be {verb}"})


def _reason(reason: str) -> str:
    if not (reason or "").strip():
        raise MonitoringPlanError({"reason": "A reason is required."})
    return reason.strip()


@transaction.atomic
def monitoring_visit_confirm(*, visit: MonitoringVisit, actor, reason: str = "Confirmed with the site"):
    visit = _locked_visit(visit)
    _require(visit, [MonitoringVisit.Status.PLANNED], "confirmed")
    visit.status = MonitoringVisit.Status.CONFIRMED
    set_audit(visit, actor=actor, reason=_reason(reason))
    visit.save()
    return visit


@transaction.atomic
def monitoring_visit_complete(*, visit: MonitoringVisit, actor, reason: str = "Visit done",
                              today: datetime.date | None = None):
    visit = _locked_visit(visit)
    _require(visit, [MonitoringVisit.Status.PLANNED, MonitoringVisit.Status.CONFIRMED], "completed")
    if visit.date > (today or timezone.localdate()):
        raise MonitoringPlanError({"date": f"the visit is on {visit.date}: it cannot be done before it happens"})
    visit.status = MonitoringVisit.Status.DONE
    set_audit(visit, actor=actor, reason=_reason(reason))
    visit.save()
    return visit


@transaction.atomic
def monitoring_visit_cancel(*, visit: MonitoringVisit, actor, reason: str):
    visit = _locked_visit(visit)
    _require(visit, [MonitoringVisit.Status.PLANNED, MonitoringVisit.Status.CONFIRMED], "cancelled")
    visit.status = MonitoringVisit.Status.CANCELLED
    set_audit(visit, actor=actor, reason=f"Cancelled: {_reason(reason)}")
    visit.save()
    if visit.kind == MonitoringVisit.Kind.ON_SITE:
        _trips_refresh(visit.study, visit.plan, actor=actor)
    return visit


def _breach_counts(breaches) -> dict:
    counts = {}
    for b in breaches:
        if not b.past:
            key = (b.constraint, b.site, b.monitor)
            counts[key] = counts.get(key, 0) + 1
    return counts


@transaction.atomic
def monitoring_visit_move(*, visit: MonitoringVisit, date: datetime.date, actor, reason: str,
                          monitor: Monitor | None = None, today: datetime.date | None = None) -> MonitoringVisit:
    """Move a visit to another day (and monitor), checked against every constraint of the plan:
    a move that adds a breach is refused naming the constraint, and nothing changes. A moved visit
    is locked: re-planning keeps it where the person put it."""
    visit = _locked_visit(visit)
    reason = _reason(reason)
    _require(visit, [MonitoringVisit.Status.PLANNED, MonitoringVisit.Status.CONFIRMED], "moved")
    today = today or timezone.localdate()
    if date < today:
        raise MoveRefused("past", f"the move breaks past: {date} is before today ({today})")
    plan = plan_in_force(study=visit.study)  # locked by _locked_visit
    monitor = monitor or visit.monitor
    if monitor.study_id != visit.study_id or not monitor.active:
        raise MoveRefused("countries", f"the move breaks countries: {monitor} is not a monitor of the plan in force")
    problem, _context = problem_build(study=visit.study, plan=plan, today=today)
    current = [v for v in problem.visits]
    if not any(v.id == visit.pk for v in current):  # outside the plan's horizon: checked on its own
        current.append(_visit_of(visit))
    moved = [Visit(site=v.site, monitor=monitor.user.username, date=date, kind=v.kind, status=v.status,
                   locked=True, id=v.id) if v.id == visit.pk else v for v in current]
    before, after = _breach_counts(check(problem, current)), check(problem, moved)
    counts = _breach_counts(after)
    worse = {key for key, n in counts.items() if n > before.get(key, 0)}
    new = [b for b in after if not b.past and (b.constraint, b.site, b.monitor) in worse]
    if new:
        raise MoveRefused(new[0].constraint, f"the move breaks {new[0].constraint}: {new[0].message}",
                          [f"{b.constraint}: {b.message}" for b in new])
    old = (visit.date, visit.monitor.user.username)
    visit.date, visit.monitor, visit.locked = date, monitor, True
    set_audit(visit, actor=actor, reason=f"Moved from {old[0]} ({old[1]}) to {date} ({monitor.user.username}): "
                                         f"{reason}")
    visit.save()
    if visit.kind == MonitoringVisit.Kind.ON_SITE:
        _trips_refresh(visit.study, plan, actor=actor)
    _grant_sites(visit.study, actor=actor)
    return visit


@transaction.atomic
def visit_report_save(*, visit: MonitoringVisit, actor, submit: bool, **fields) -> VisitReport:
    """Write (or submit) the visit's monitoring report, with the site's SDV progress as it stands."""
    from sdv.monitoring.selectors import sdv_progress

    # The visit's row, not the report's: two first saves at once would both find no report to
    # lock and both insert one (the second a unique-constraint error).
    MonitoringVisit.objects.select_for_update().get(pk=visit.pk)
    report = VisitReport.objects.filter(visit=visit).first() or VisitReport(visit=visit, author=actor)
    if report.status == VisitReport.Status.SUBMITTED:
        raise MonitoringPlanError({"status": "the report is submitted and can no longer change"})
    for name in ("attendees", "summary", "findings", "actions"):
        if name in fields:
            setattr(report, name, fields[name])
    report.sdv_progress = sdv_progress(site=visit.site)
    report.updated_at = timezone.now()
    if submit:
        if not report.summary.strip():
            raise MonitoringPlanError({"summary": "A submitted report needs a summary."})
        report.status, report.submitted_at = VisitReport.Status.SUBMITTED, timezone.now()
    set_audit(report, actor=actor, reason="Visit report submitted" if submit else "Visit report saved")
    report.save()
    return report
