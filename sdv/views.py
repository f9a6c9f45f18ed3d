"""Pages of risk-based monitoring: the study's risk dashboard (a site x KRI heatmap of flags, a
funnel plot per KRI with its +/-2 and +/-3 bounds, quality tolerance limits, flags changed since
the previous snapshot) and a site's page (risk and KRI history, explanation, SDV plan). Charts
are drawn in the browser by the vendored Chart.js from data embedded with json_script."""

import datetime

import numpy as np
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from sdv import selectors
from sdv.kri import funnel_bounds
from sdv.models import KriDefinition, SdvSelection
from studies.selectors import site_list, study_list

FUNNEL_ANALYSES = {"normal_rate": False, "normal_binary": True}


def _study_for_risk(request, pk: int):
    study = get_object_or_404(study_list(user=request.user), pk=pk)
    if not selectors.risk_readable(user=request.user, study=study):
        raise Http404("No such study.")
    return study


def _snapshot_date(request):
    try:
        return datetime.date.fromisoformat(request.GET.get("snapshot", ""))
    except ValueError:
        return None


@login_required
@require_GET
def risk_dashboard_view(request, pk: int):
    study = _study_for_risk(request, pk)
    snapshot = selectors.kri_snapshot_latest(study=study, snapshot_date=_snapshot_date(request))
    definitions = {d.kri_id: d for d in KriDefinition.objects.filter(study=study).order_by("kri_id")}
    context = {"study": study, "snapshot": snapshot, "definitions": definitions,
               "snapshots": study.kri_snapshots.order_by("-snapshot_date").values_list("snapshot_date", flat=True)[:24]}
    if snapshot is None:
        return render(request, "sdv/risk_dashboard.html", context)
    assessments = list(selectors.site_risk_list(user=request.user).filter(snapshot=snapshot)
                       .order_by("-risk_score", "site__number"))
    results = selectors.kri_result_list(user=request.user).filter(snapshot=snapshot)
    site_rows = list(results.filter(level=KriDefinition.Level.SITE).values(
        "kri_id", "site_id", "flag", "score", "metric", "numerator", "denominator", "group", "overall", "factor"))
    kris = sorted({r["kri_id"] for r in site_rows})
    cells = {(r["site_id"], r["kri_id"]): r | {"css": _flag_css(r["flag"])} for r in site_rows}
    heatmap = [{"assessment": a, "cells": [cells.get((a.site_id, kri), {"flag": None}) for kri in kris]}
               for a in assessments]
    chosen = request.GET.get("kri") if request.GET.get("kri") in kris else (kris[0] if kris else None)
    tiers = {t: sum(a.tier == t for a in assessments) for t in ("high", "medium", "low")}
    context |= {
        "assessments": assessments, "kris": kris, "heatmap": heatmap, "chosen": chosen, "tiers": tiers,
        "funnel": _funnel(definitions.get(chosen), [r for r in site_rows if r["kri_id"] == chosen]),
        "changes": selectors.kri_flag_changes(user=request.user, snapshot=snapshot).filter(
            level=KriDefinition.Level.SITE)[:100],
        "in_a_row": selectors.kri_flagged_in_a_row(user=request.user, snapshot=snapshot, at_least=2).filter(
            level=KriDefinition.Level.SITE)[:100],
        "other_levels": results.exclude(level=KriDefinition.Level.SITE).order_by("level", "kri_id", "group"),
        "can_write": selectors.risk_writable(user=request.user, study=study),
    }
    return render(request, "sdv/risk_dashboard.html", context)


def _flag_css(flag) -> str:
    if flag is None:
        return "flag-none"
    return f"flag-{'m' if flag < 0 else 'p' if flag > 0 else ''}{abs(flag)}"


def _funnel(definition, rows: list[dict]) -> dict | None:
    """Points (denominator, metric, flag) of one KRI and, for the normal approximation, its
    bounds at each threshold (as gsm draws them) from the stored p and phi."""
    if definition is None or not rows:
        return None
    points = [{"x": r["denominator"], "y": r["metric"], "site": r["group"], "flag": r["flag"]} for r in rows]
    funnel = {"kri": definition.kri_id, "name": definition.name, "x": definition.denominator_label,
              "y": f"{definition.numerator_label} / {definition.denominator_label}", "points": points, "bounds": []}
    binary = FUNNEL_ANALYSES.get(definition.analysis)
    overall, factor = rows[0]["overall"], rows[0]["factor"]
    if binary is None or overall is None or factor is None:
        return funnel
    bounds = funnel_bounds(denominator=np.array([r["denominator"] for r in rows]), overall=overall, factor=factor,
                           binary=binary, thresholds=(-3, -2, 2, 3))
    for z in (-3.0, -2.0, 0.0, 2.0, 3.0):
        at = bounds["threshold"] == z
        funnel["bounds"].append({"z": z, "points": [{"x": float(x), "y": float(y)} for x, y in
                                                    zip(bounds["denominator"][at], bounds["metric"][at], strict=True)]})
    return funnel


@login_required
@require_GET
def site_risk_view(request, pk: int, site_pk: int):
    study = _study_for_risk(request, pk)
    site = get_object_or_404(site_list(user=request.user, study=study), pk=site_pk)
    definitions = {d.kri_id: d for d in KriDefinition.objects.filter(study=study)}
    history = list(selectors.site_risk_history(user=request.user, site=site))
    kri_rows = list(selectors.site_kri_history(user=request.user, site=site).values(
        "kri_id", "snapshot__snapshot_date", "metric", "score", "flag", "numerator", "denominator",
        "consecutive_flagged"))
    by_kri = {}
    for row in kri_rows:
        by_kri.setdefault(row["kri_id"], []).append(row)
    plan = selectors.sdv_plan_list(user=request.user).filter(site=site).first()
    context = {
        "study": study, "site": site, "latest": history[-1] if history else None,
        "history": history, "by_kri": by_kri, "definitions": definitions, "plan": plan,
        "plan_history": plan.history.order_by("-history_date")[:10] if plan else [],
        "selected": dict(SdvSelection.objects.filter(site=site).values_list("reason").annotate(n=Count("pk"))),
        "chart": {"dates": [h.snapshot.snapshot_date.isoformat() for h in history],
                  "risk": [h.risk_score for h in history],
                  "kris": {kri: {"name": definitions[kri].abbreviation if kri in definitions else kri,
                                 "points": [{"x": r["snapshot__snapshot_date"].isoformat(), "y": r["score"]}
                                            for r in rows]}
                           for kri, rows in by_kri.items()}},
    }
    return render(request, "sdv/site_risk.html", context)
