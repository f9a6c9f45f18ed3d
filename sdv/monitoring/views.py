"""Pages of the monitoring plan: the plan view per study (a calendar per monitor by week or month,
a Leaflet map of sites, homes and trips, the load per monitor and week, breaches in red), a CRA's
own calendar, a visit's page (actions, letters, the monitoring visit report with the site's SDV
progress), the .ics feed per monitor and the visit letters as PDF."""

import datetime
import json
from collections import defaultdict

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.orchestrator import WorkflowCannotStart, agent_run_start
from agents.services import WorkflowRunOverlap
from sdv.monitoring import calendar_views, ics, letters, selectors, services
from sdv.monitoring.checker import Breach, check
from sdv.monitoring.models import Monitor, MonitoringVisit, VisitReport
from studies.selectors import site_list, study_list

ICS_SALT = "sdv.monitoring.ics"


def _study(request, pk: int):
    study = get_object_or_404(study_list(user=request.user), pk=pk)
    if not selectors.plan_readable(user=request.user, study=study):
        raise Http404("No such study.")
    return study


def ics_token(monitor: Monitor) -> str:
    """The secret part of a monitor's calendar subscription URL (calendar apps cannot log in)."""
    return signing.Signer(salt=ICS_SALT).sign(str(monitor.pk)).split(":", 1)[1]


def _calendar(request, visits, *, default: datetime.date):
    view = "month" if request.GET.get("view") == "month" else "week"
    at = calendar_views.parse_day(request.GET.get("at"), default)
    start, end, previous, following = calendar_views.period(view, at)
    shown = [v for v in visits if start <= v.date < end or (v.kind == "on_site" and v.date < start <= v.date
                                                            + datetime.timedelta(days=v.days - 1))]
    return {"view": view, "at": at, "start": start, "end": end - datetime.timedelta(days=1), "previous": previous,
            "following": following, "visits": shown,
            "month": at.month if view == "month" else None}


@login_required
@require_GET
def plan_view(request, pk: int):
    study = _study(request, pk)
    plan = selectors.plan_latest(study=study)
    visits = list(selectors.monitoring_visit_list(user=request.user).filter(study=study)
                  .exclude(status=MonitoringVisit.Status.CANCELLED).order_by("date", "site__number"))
    today = timezone.localdate()
    context = {"study": study, "plan": plan, "can_replan": selectors.plan_manageable(user=request.user, study=study)}
    if plan is None:
        return render(request, "sdv/monitoring/plan.html", context)
    default = min(max(today, plan.start), plan.start + datetime.timedelta(weeks=plan.horizon_weeks) -
                  datetime.timedelta(days=1))
    cal = _calendar(request, visits, default=default)
    monitors = list(selectors.monitors_of(user=request.user, study=study))
    rows = []
    for monitor in monitors:
        own = [v for v in cal["visits"] if v.monitor_id == monitor.pk]
        rows.append({"monitor": monitor, "weeks": calendar_views.grid(own, cal["start"], cal["end"] +
                                                                      datetime.timedelta(days=1), cal["month"])})
    problem, built = services.problem_build(study=study, plan=plan, today=today)
    visible = {v.pk for v in visits}
    readable = set(site_list(user=request.user, study=study).values_list("number", flat=True))
    readable |= {v.site.number for v in visits}
    found = check(problem, list(problem.visits)) + [Breach("location", u["why"], site=u["site"])
                                                     for u in built["unplanned"]]
    breaches = [b for b in found if b.site is None or b.site in readable]
    breach_keys = {(b.site, b.monitor, b.date) for b in breaches}
    context |= {
        "cal": cal, "rows": rows, "figures": plan.last_result or {}, "breaches": breaches,
        "breach_sites": {b.site for b in breaches if b.site},
        "breach_site_list": sorted({b.site for b in breaches if b.site}),
        "load": _load(plan, monitors, visits, breaches),
        "map_data": _map_data(study, monitors, visits), "tile_url": settings.MONITORING_MAP_TILE_URL,
        "tile_attribution": settings.MONITORING_MAP_TILE_ATTRIBUTION, "visible": len(visible),
        "breach_keys": breach_keys,
    }
    return render(request, "sdv/monitoring/plan.html", context)


def _load(plan, monitors, visits, breaches) -> dict:
    """On-site days and remote hours per monitor and ISO week of the horizon, against capacity."""
    weeks, day = [], plan.start - datetime.timedelta(days=plan.start.weekday())
    end = plan.start + datetime.timedelta(weeks=plan.horizon_weeks)
    while day < end:
        weeks.append(day)
        day += datetime.timedelta(days=7)
    on_site, remote = defaultdict(int), defaultdict(int)
    for v in visits:
        monday = v.date - datetime.timedelta(days=v.date.weekday())
        if v.kind == "on_site":
            on_site[(v.monitor_id, monday)] += v.days
        else:
            remote[(v.monitor_id, monday)] += 1
    over = {(b.monitor, b.date) for b in breaches if b.constraint in ("days_per_week", "remote_hours")}
    rows = []
    for m in monitors:
        cells = []
        for monday in weeks:
            days, hours = on_site[(m.pk, monday)], remote[(m.pk, monday)] * plan.remote_visit_hours
            cells.append({"days": days, "hours": hours, "over": (m.user.username, monday) in over
                          or days > m.days_per_week or hours > m.remote_hours_per_week})
        rows.append({"monitor": m, "cells": cells})
    return {"weeks": weeks, "rows": rows}


def _map_data(study, monitors, visits) -> dict:
    sites = {}
    for v in visits:
        s = v.site
        if s.latitude is not None:
            sites[s.number] = {"number": s.number, "name": s.name, "city": s.city, "lat": float(s.latitude),
                               "lon": float(s.longitude)}
    trips = defaultdict(list)
    for v in visits:
        if v.trip_id:
            trips[v.trip_id].append(v)
    homes = {m.pk: {"username": m.user.username, "name": m.name, "city": m.home_city, "lat": float(m.home_latitude),
                    "lon": float(m.home_longitude)} for m in monitors}
    lines = []
    for trip_id, own in trips.items():
        own.sort(key=lambda v: v.date)
        h = homes.get(own[0].monitor_id)
        if h is None:
            continue
        points = [[h["lat"], h["lon"]]] + [[float(v.site.latitude), float(v.site.longitude)] for v in own] + [
            [h["lat"], h["lon"]]]
        lines.append({"trip": trip_id, "monitor": h["username"], "points": points,
                      "label": f"Trip {trip_id}: {h['name']}, {own[0].date}..{own[-1].date}, "
                               f"{sum(v.travel_km for v in own):.0f} km"})
    return {"sites": list(sites.values()), "homes": list(homes.values()), "trips": lines}


@login_required
@require_POST
def plan_replan_view(request, pk: int):
    study = _study(request, pk)
    if not selectors.plan_manageable(user=request.user, study=study):
        raise Http404("No such study.")
    try:
        run = agent_run_start(agent="MonitoringOrchestrator", study_id=study.pk, actor=request.user)
    except (WorkflowRunOverlap, WorkflowCannotStart) as exc:
        messages.error(request, str(exc))
        return redirect("monitoring-plan", pk=study.pk)
    messages.success(request, f"Re-planning started (run {run.pk}).")
    return redirect("monitoring-plan", pk=study.pk)


@login_required
@require_GET
def my_calendar_view(request):
    monitors = list(Monitor.objects.filter(user=request.user).select_related("study"))
    visits = list(selectors.monitoring_visit_list(user=request.user).filter(monitor__user=request.user)
                  .exclude(status=MonitoringVisit.Status.CANCELLED).order_by("date"))
    today = timezone.localdate()
    upcoming = next((v.date for v in visits if v.date >= today), today)
    cal = _calendar(request, visits, default=upcoming if request.GET.get("at") is None else today)
    weeks = calendar_views.grid(cal["visits"], cal["start"], cal["end"] + datetime.timedelta(days=1), cal["month"])
    feeds = [{"monitor": m, "url": request.build_absolute_uri(reverse("monitoring-ics", args=[m.pk, ics_token(m)]))}
             for m in monitors if selectors.monitor_feed_visits(monitor=m) is not None]  # feeds that answer
    return render(request, "sdv/monitoring/my_calendar.html",
                  {"cal": cal, "weeks": weeks, "feeds": feeds, "upcoming": [v for v in visits if v.date >= today][:20]})


@require_GET
def ics_view(request, monitor_pk: int, token: str):
    """The monitor's visits as an iCalendar feed; the URL's token stands in for a login."""
    monitor = Monitor.objects.filter(pk=monitor_pk).select_related("user", "study").first()
    if monitor is None or not signing.constant_time_compare(token, ics_token(monitor)):
        raise Http404("No such calendar.")
    visits = selectors.monitor_feed_visits(monitor=monitor)
    if visits is None:  # the monitor's access was withdrawn: so is the feed
        raise Http404("No such calendar.")
    visits = visits.order_by("date")
    response = HttpResponse(ics.calendar_feed(monitor, visits), content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="monitoring-{monitor.user.username}.ics"'
    return response


def _visit(request, pk: int) -> MonitoringVisit:
    return get_object_or_404(selectors.monitoring_visit_list(user=request.user), pk=pk)


@login_required
@require_http_methods(["GET", "POST"])
def visit_detail_view(request, pk: int):
    visit = _visit(request, pk)
    can_manage = selectors.visit_manageable(user=request.user, visit=visit)
    report = VisitReport.objects.filter(visit=visit).first()
    if request.method == "POST":
        if not can_manage:
            raise Http404("No such visit.")
        try:
            _visit_post(request, visit)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        return redirect("monitoring-visit", pk=visit.pk)
    return render(request, "sdv/monitoring/visit.html", {
        "visit": visit, "can_manage": can_manage, "report": report, "history": visit.history.order_by("-history_date"),
        "sdv": selectors.sdv_progress(site=visit.site), "languages": letters.LANGUAGES,
        "trip_visits": list(visit.trip.visits.select_related("site").order_by("date")) if visit.trip_id else [],
    })


def _visit_post(request, visit) -> None:
    action, reason = request.POST.get("action"), request.POST.get("reason", "")
    if action == "confirm":
        services.monitoring_visit_confirm(visit=visit, actor=request.user, reason=reason or "Confirmed with the site")
    elif action == "complete":
        services.monitoring_visit_complete(visit=visit, actor=request.user, reason=reason or "Visit done")
    elif action == "cancel":
        services.monitoring_visit_cancel(visit=visit, actor=request.user, reason=reason)
    elif action == "move":
        day = calendar_views.parse_day(request.POST.get("date"), None)
        if day is None:
            raise ValidationError("Give the new date as YYYY-MM-DD.")
        services.monitoring_visit_move(visit=visit, date=day, actor=request.user, reason=reason)
    elif action in ("save_report", "submit_report"):
        services.visit_report_save(visit=visit, actor=request.user, submit=action == "submit_report",
                                   **{k: request.POST.get(k, "") for k in ("attendees", "summary", "findings",
                                                                           "actions")})
    else:
        raise ValidationError("Unknown action.")
    messages.success(request, f"Visit {visit.pk}: {action.replace('_', ' ')} done.")


@login_required
@require_GET
def letter_view(request, pk: int, letter: str):
    visit = _visit(request, pk)
    if letter not in letters.LETTERS:
        raise Http404("No such letter.")
    language = request.GET.get("lang") or visit.site.language
    pdf = letters.letter_pdf(visit, letter, language=language,
                             report=VisitReport.objects.filter(visit=visit).first())
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{letter}-visit-{visit.pk}.pdf"'
    return response


def map_json(data) -> str:
    return json.dumps(data)
