"""Pages of the data review: what the QueryAnalyzer found (to the site, held back, medical
review) and the rule catalogue with each rule's statistics."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from agents.orchestrator import WorkflowCannotStart, workflow_start
from agents.services import WorkflowRunOverlap
from queries.models import AnalyzerPass, Discrepancy, EditCheck
from queries.selectors import discrepancy_list, edit_check_list, rule_statistics
from studies.selectors import site_list, study_list, study_user_can, study_user_can_at_a_site

PER_PAGE = 50
FILTERS = ("site", "rule_type", "severity", "category", "disposition", "status")


def _study_for_review(request, pk: int):
    study = get_object_or_404(study_list(user=request.user), pk=pk)
    if not study_user_can_at_a_site(user=request.user, capability="review_discrepancies", study=study):
        raise Http404("No such study.")
    return study


@login_required
@require_GET
def discrepancy_list_view(request, pk: int):
    study = _study_for_review(request, pk)
    rows = discrepancy_list(user=request.user).filter(study=study)
    chosen = {name: request.GET.get(name, "") for name in FILTERS}
    if not any(chosen.values()):
        chosen["status"] = Discrepancy.Status.OPEN
    for name, value in chosen.items():
        if value:
            rows = rows.filter(**{"site__number" if name == "site" else name: value})
    try:
        min_confidence = float(request.GET.get("min_confidence") or 0)
    except ValueError:
        min_confidence = 0
    if min_confidence:
        rows = rows.filter(confidence__gte=min_confidence)
    counts = discrepancy_list(user=request.user).filter(study=study, status=Discrepancy.Status.OPEN).aggregate(
        **{d: Count("id", filter=Q(disposition=d)) for d in Discrepancy.Disposition.values})
    page = Paginator(rows.order_by("-severity", "-confidence", "id"), PER_PAGE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(request, "queries/discrepancies.html", {
        "study": study, "page": page, "chosen": chosen, "min_confidence": min_confidence or "",
        "querystring": params.urlencode(), "counts": counts,
        "sites": site_list(user=request.user, study=study).order_by("number"),
        "choices": {"rule_type": EditCheck.RuleType.choices,
                    "severity": Discrepancy._meta.get_field("severity").choices,
                    "category": Discrepancy._meta.get_field("category").choices,
                    "disposition": Discrepancy.Disposition.choices, "status": Discrepancy.Status.choices},
        "last_pass": AnalyzerPass.objects.filter(study=study, finished_at__isnull=False).first(),
        "can_run": study_user_can(user=request.user, capability="run_workflow", study=study),
    })


@login_required
@require_POST
def analyzer_run_view(request, pk: int):
    study = _study_for_review(request, pk)
    if not study_user_can(user=request.user, capability="run_workflow", study=study):
        raise Http404("No such study.")
    try:
        run = workflow_start(name="data_review", study_id=study.pk, actor=request.user)
    except (WorkflowRunOverlap, WorkflowCannotStart) as error:
        messages.error(request, str(error))
        return redirect("study-discrepancies", pk=study.pk)
    messages.success(request, "The QueryAnalyzer is running: its progress is on the run's page.")
    return redirect("workflow-run-detail", pk=run.pk)


@login_required
@require_GET
def edit_check_list_view(request, pk: int):
    study = _study_for_review(request, pk)
    checks = edit_check_list(user=request.user).filter(study=study).annotate(
        open_count=Count("discrepancies", filter=Q(discrepancies__status=Discrepancy.Status.OPEN)),
        query_count=Count("discrepancies__query", distinct=True),
    ).order_by("rule_type", "code")
    statistics = rule_statistics(user=request.user, study=study)
    per_rule: dict[str, dict] = {}
    for row in statistics:
        total = per_rule.setdefault(row["rule"], {"queries": 0, "closed": 0, "confirmed_correct": 0})
        for field in total:
            total[field] += row[field]
    rows = [(check, per_rule.get(check.code, {})) for check in checks]
    page = Paginator(rows, PER_PAGE * 2).get_page(request.GET.get("page"))
    codes = {check.code for check in checks}
    # Queries no check of ours raised: hand-written ones, and the EDC's (imported history)
    history = sorted((rule, values) for rule, values in per_rule.items() if rule not in codes)
    return render(request, "queries/edit_checks.html", {"study": study, "page": page, "history": history,
                                                         "statistics": statistics[:500]})
