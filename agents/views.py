"""Agent pages: the registry with health, a study's workflow runs, and one run followed live
(HTMX polling every 2 s while it is pending or running). Scoped like the API (agents.api): a run
outside the user's studies is a 404; starting and changing runs is for data managers and sponsors."""

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.api import agent_rows, step_duration_ms, user_can_run, visible_study, workflow_run_list
from agents.models import AgentRun, Status, WorkflowDefinition
from agents.workflow_spec import builtin_sources

RUNS_PER_PAGE = 25


@login_required
@require_GET
def agent_list_view(request):
    return render(request, "agents/agent_list.html", {"agents": agent_rows()})


def _workflow_choices() -> list[tuple[str, str]]:
    """(name, label) of every workflow a run can start: the stored definitions (newest version)
    and the built-in ones, which workflow_start stores on first use."""
    described: dict[str, str] = {}
    for definition in WorkflowDefinition.objects.order_by("name", "-version"):
        described.setdefault(definition.name, f"{definition.name} v{definition.version}")
    for _, source in builtin_sources():
        spec = yaml.safe_load(source) or {}
        described.setdefault(spec["name"], f"{spec['name']} v{spec['version']}")
    return sorted(described.items())


@login_required
@require_http_methods(["GET", "POST"])
def study_runs_view(request, pk: int):
    from agents.orchestrator import WorkflowCannotStart, WorkflowNotFound, workflow_start
    from agents.services import WorkflowRunOverlap

    study = visible_study(user=request.user, study_id=pk)
    if study is None:
        raise Http404
    can_run = user_can_run(user=request.user, study=study)
    choices = _workflow_choices()
    if request.method == "POST":
        if not can_run:
            raise PermissionDenied("Only data managers and sponsors of the study may start workflows.")
        name = request.POST.get("workflow", "")
        try:
            run = workflow_start(name=name, study_id=study.pk, trigger=AgentRun.Trigger.MANUAL, actor=request.user)
        except (WorkflowNotFound, WorkflowCannotStart, WorkflowRunOverlap) as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Workflow {run.workflow} started (run {run.pk}).")
            return redirect("workflow-run-detail", pk=run.pk)
    runs = workflow_run_list(user=request.user).filter(study_id=study.pk)
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "agents/study_runs.html", {
        "study": study, "page": page, "can_run": can_run, "workflow_choices": choices,
    })


@login_required
@require_GET
def run_detail_view(request, pk: int):
    run = get_object_or_404(workflow_run_list(user=request.user), pk=pk)
    study = visible_study(user=request.user, study_id=run.study_id) if run.study_id else None
    steps = list(run.steps.select_related("compensates").order_by("stage", "id"))
    for step in steps:
        step.duration_ms = step_duration_ms(step)
    context = {
        "run": run, "study": study, "steps": steps,
        "can_run": user_can_run(user=request.user, study=study),
        "percent": round(100 * run.steps_done / run.steps_total) if run.steps_total else 100 * run.is_finished,
        "restartable": run.status in (Status.FAILED, Status.CANCELLED),
    }
    template = "agents/_run_status.html" if request.headers.get("HX-Request") else "agents/run_detail.html"
    return render(request, template, context)


@login_required
@require_POST
def run_action_view(request, pk: int, action: str):
    from agents.orchestrator import run_retry, run_rollback
    from agents.services import RunNotInState, WorkflowRunOverlap, run_cancel

    services = {"cancel": run_cancel, "retry": run_retry, "rollback": run_rollback}
    run = get_object_or_404(workflow_run_list(user=request.user), pk=pk)
    study = visible_study(user=request.user, study_id=run.study_id) if run.study_id else None
    if not user_can_run(user=request.user, study=study):
        raise PermissionDenied("Only data managers and sponsors of the study may change its runs.")
    try:
        services[action](run_id=run.pk)
    except (RunNotInState, WorkflowRunOverlap) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, {"cancel": "Run cancelled.", "retry": "Retrying from the failed step.",
                                   "rollback": "Rolling back: compensation steps are running."}[action])
    return redirect("workflow-run-detail", pk=run.pk)
