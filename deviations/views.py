"""Pages of protocol deviations: the deviation log per study and per site (filters, sorting, bulk
review), a deviation's page (evidence, history, coding, root cause, CAPA), reporting a deviation,
the dashboard (rates per site against the study, by category, trend), root-cause proposals, CAPAs
and the periodic reports with their sign-off; the listing (PDF, Excel) and DV downloads. Every row
comes from a scoped selector: another site's deviation is a 404."""

import datetime
import json

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, F, Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.orchestrator import WorkflowCannotStart, workflow_start
from agents.services import WorkflowRunOverlap
from deviations.api import deviation_history_rows
from deviations.capa import capa_create, capa_effectiveness_check, capa_update
from deviations.coding import vocabulary
from deviations.models import Capa, DetectionPass, Deviation, RootCause
from deviations.plan import plan_latest
from deviations.reporting import SIGNATURE_MEANINGS, compliance_report_sign, dv_bytes, listing_pdf, listing_xlsx
from deviations.rootcause import root_cause_decide, subject_days
from deviations.selectors import (
    capa_list,
    compliance_report_list,
    deviation_list,
    deviation_study_can,
    deviation_user_can,
    root_cause_analysis_list,
)
from deviations.services import (
    TRANSITIONS,
    deviation_recode,
    deviation_report,
    deviation_root_cause_set,
    deviation_transition,
    deviations_bulk_transition,
)
from studies.selectors import site_list, study_list, study_user_can, subject_list

PER_PAGE = 50
FILTERS = ("category", "importance", "status", "source")
SORTS = {"occurred": F("occurred_on"), "site": F("site__number"), "subject": F("subject__subject_id"),
         "category": F("category"), "importance": F("importance"), "status": F("status"), "id": F("id")}


def _study(request, pk: int):
    return get_object_or_404(study_list(user=request.user), pk=pk)


def _rows(request, study, site=None):
    rows = deviation_list(user=request.user).filter(study=study)
    if site is not None:
        rows = rows.filter(site=site)
    chosen = {name: request.GET.get(name, "").strip() for name in (*FILTERS, "site", "q", "sort")}
    for name in FILTERS:
        if chosen[name]:
            rows = rows.filter(**{name: chosen[name]})
    if chosen["site"] and site is None:
        rows = rows.filter(site__number=chosen["site"])
    if chosen["q"]:
        rows = rows.filter(Q(subject__subject_id__icontains=chosen["q"]) | Q(description__icontains=chosen["q"])
                           | Q(dvdecod__icontains=chosen["q"]))
    key = chosen["sort"].lstrip("-") if chosen["sort"].lstrip("-") in SORTS else "occurred"
    descending = chosen["sort"].startswith("-") or not chosen["sort"]
    field = SORTS[key]
    rows = rows.order_by(field.desc(nulls_last=True) if descending else field.asc(nulls_last=True), "-id")
    return rows, chosen


def _sort_links(request, chosen) -> dict:
    links = {}
    for key in SORTS:
        params = request.GET.copy()
        params.pop("page", None)
        params["sort"] = f"-{key}" if chosen["sort"] == key else key
        links[key] = "?" + params.urlencode()
    return links


@login_required
@require_GET
def deviation_log_view(request, pk: int, site_pk: int | None = None):
    study = _study(request, pk)
    site = get_object_or_404(site_list(user=request.user, study=study), pk=site_pk) if site_pk else None
    rows, chosen = _rows(request, study, site)
    page = Paginator(rows, PER_PAGE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    scope = deviation_list(user=request.user).filter(study=study, **({"site": site} if site else {}))
    counts = scope.aggregate(open=Count("pk", filter=Q(status=Deviation.Status.OPEN)),
                             under_review=Count("pk", filter=Q(status=Deviation.Status.UNDER_REVIEW)),
                             important=Count("pk", filter=Q(importance=Deviation.Importance.IMPORTANT)
                                             & ~Q(resolution=Deviation.Resolution.WITHDRAWN)),
                             detected=Count("pk", filter=Q(source=Deviation.Source.DETECTED)))
    can = {"review": deviation_study_can(user=request.user, capability="review_deviation", study=study,
                                         at_a_site=True),
           "report": deviation_study_can(user=request.user, capability="report_deviation", study=study,
                                         at_a_site=True),
           "run": study_user_can(user=request.user, capability="run_workflow", study=study),
           "study": deviation_study_can(user=request.user, capability="read_study_deviations", study=study)}
    return render(request, "deviations/log.html", {
        "study": study, "site": site, "page": page, "chosen": chosen, "querystring": params.urlencode(),
        "sort_links": _sort_links(request, chosen), "counts": counts, "can": can,
        "sites": site_list(user=request.user, study=study).order_by("number"),
        "choices": {"category": Deviation.Category.choices, "importance": Deviation.Importance.choices,
                    "status": Deviation.Status.choices, "source": Deviation.Source.choices},
        "transitions": list(TRANSITIONS), "plan": plan_latest(study=study),
        "last_pass": DetectionPass.objects.filter(study=study, finished_at__isnull=False).first()})


@login_required
@require_POST
def deviation_bulk_view(request, pk: int):
    study = _study(request, pk)
    ids = [int(i) for i in request.POST.getlist("ids") if i.isascii() and i.isdigit() and len(i) < 18]
    rows = list(deviation_list(user=request.user).filter(study=study, pk__in=ids))
    back = request.POST.get("next") or ""
    if not (back.startswith("/") and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                                                      require_https=request.is_secure())):
        back = reverse("study-deviations", args=[study.pk])  # never another site's address ("//host/...")
    if not rows:
        messages.error(request, "Select at least one deviation.")
        return redirect(back)
    try:
        deviations_bulk_transition(deviations=rows, actor=request.user, transition=request.POST.get("transition", ""),
                                   reason=request.POST.get("reason", ""),
                                   resolution=request.POST.get("resolution") or Deviation.Resolution.CONFIRMED)
    except (ValidationError, PermissionDenied) as error:
        messages.error(request, _message(error))
        return redirect(back)
    messages.success(request, f"{len(rows)} deviation(s): {request.POST.get('transition')} done.")
    return redirect(back)


def _message(error) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(m for ms in (error.message_dict.values() if hasattr(error, "error_dict")
                                      else [error.messages]) for m in ms)
    return str(error)


@login_required
@require_POST
def deviation_detect_view(request, pk: int):
    study = _study(request, pk)
    if not study_user_can(user=request.user, capability="run_workflow", study=study):
        raise Http404("No such study.")
    try:
        run = workflow_start(name="data_review", study_id=study.pk, actor=request.user)
    except (WorkflowRunOverlap, WorkflowCannotStart) as error:
        messages.error(request, str(error))
        return redirect("study-deviations", pk=study.pk)
    messages.success(request, "Edit checks and PatternRecognition are running: progress on the run's page.")
    return redirect("workflow-run-detail", pk=run.pk)


@login_required
@require_http_methods(["GET", "POST"])
def deviation_detail_view(request, pk: int):
    deviation = get_object_or_404(deviation_list(user=request.user), pk=pk)
    if request.method == "POST":
        action, post = request.POST.get("action", ""), request.POST
        try:
            if action in TRANSITIONS:
                deviation_transition(deviation=deviation, actor=request.user, transition=action,
                                     reason=post.get("reason", ""),
                                     resolution=post.get("resolution") or Deviation.Resolution.CONFIRMED)
            elif action == "recode":
                deviation_recode(deviation=deviation, actor=request.user, reason=post.get("reason", ""),
                                 dvdecod=post.get("dvdecod") or None, importance=post.get("importance") or None)
            elif action == "root_cause":
                deviation_root_cause_set(deviation=deviation, actor=request.user, reason=post.get("reason", ""),
                                         root_cause=post.get("root_cause", ""))
            else:
                raise ValidationError({"action": "Unknown action."})
        except (ValidationError, PermissionDenied) as error:
            messages.error(request, _message(error))
        else:
            messages.success(request, "Saved, with your reason, in the audit trail.")
        return redirect("deviation-detail", pk=deviation.pk)
    site = deviation.site
    return render(request, "deviations/detail.html", {
        "deviation": deviation, "study": deviation.study, "history": deviation_history_rows(deviation)[::-1],
        "evidence": json.dumps(deviation.evidence, indent=2) if deviation.evidence else "",
        "capas": capa_list(user=request.user).filter(Q(deviations=deviation) | Q(
            root_cause_analysis_id=deviation.root_cause_analysis_id, root_cause_analysis__isnull=False)).distinct(),
        "can_review": deviation_user_can(user=request.user, capability="review_deviation", site=site),
        "can_root_cause": deviation_user_can(user=request.user, capability="decide_root_cause", site=site),
        "can_capa": deviation_user_can(user=request.user, capability="manage_capa", site=site),
        "transitions": [t for t, (starts, _) in TRANSITIONS.items() if deviation.status in starts],
        "vocabulary": vocabulary(), "root_causes": RootCause.choices, "importances": Deviation.Importance.choices,
        "resolutions": Deviation.Resolution.choices})


class ReportForm(forms.Form):
    subject = forms.ModelChoiceField(queryset=None, required=False, help_text="Empty for a site-level deviation")
    site = forms.ModelChoiceField(queryset=None, required=False)
    category = forms.ChoiceField(choices=Deviation.Category.choices)
    occurred_on = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    dvdecod = forms.ChoiceField(required=False, label="Coded term (DVDECOD)")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), max_length=4000)

    def __init__(self, *args, user, study, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["subject"].queryset = subject_list(user=user).filter(study=study).order_by("subject_id")
        self.fields["site"].queryset = site_list(user=user, study=study).order_by("number")
        self.fields["dvdecod"].choices = [("", "Default for the category")] + sorted(
            {(r["dvdecod"], f"{r['dvcat']}: {r['dvdecod']}") for r in vocabulary()}, key=lambda c: c[1])


@login_required
@require_http_methods(["GET", "POST"])
def deviation_report_view(request, pk: int):
    study = _study(request, pk)
    form = ReportForm(request.POST or None, user=request.user, study=study)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        site = data["subject"].site if data["subject"] else data["site"]
        if site is None:
            form.add_error("subject", "Choose a subject, or a site for a site-level deviation.")
        else:
            try:
                deviation = deviation_report(actor=request.user, site=site, subject=data["subject"],
                                             category=data["category"], description=data["description"],
                                             occurred_on=data["occurred_on"], dvdecod=data["dvdecod"])
            except PermissionDenied as error:
                form.add_error(None, str(error))
            except ValidationError as error:
                form.add_error(None, _message(error))
            else:
                messages.success(request, "Deviation reported.")
                return redirect("deviation-detail", pk=deviation.pk)
    return render(request, "deviations/report.html", {"study": study, "form": form})


def _download(content: bytes, content_type: str, name: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@login_required
@require_GET
def deviation_listing_view(request, pk: int, kind: str):
    study = _study(request, pk)
    rows, _ = _rows(request, study)
    if kind == "pdf":
        return _download(listing_pdf(study=study, deviations=rows), "application/pdf",
                         f"{study.protocol_id}-deviations.pdf")
    if kind == "xlsx":
        return _download(listing_xlsx(study=study, deviations=rows),
                         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                         f"{study.protocol_id}-deviations.xlsx")
    if kind == "xpt" and deviation_study_can(user=request.user, capability="read_study_deviations", study=study):
        return _download(dv_bytes(study=study), "application/x-sas-xport", "dv.xpt")
    raise Http404("No such file.")


@login_required
@require_GET
def deviation_dashboard_view(request, pk: int):
    """Rates per site (per 1000 subject-days over the last 12 months, the KRI way) against the
    study's, counts by category and importance, and the monthly trend."""
    study = _study(request, pk)
    end = timezone.now().date()
    start = end - datetime.timedelta(days=364)
    seen = deviation_list(user=request.user).filter(study=study).exclude(resolution=Deviation.Resolution.WITHDRAWN)
    days = subject_days(study=study, start=start, end=end)
    in_year = seen.filter(occurred_on__gte=start, occurred_on__lte=end)
    per_site = {r["site_id"]: r for r in in_year.values("site_id").annotate(
        n=Count("pk"), important=Count("pk", filter=Q(importance=Deviation.Importance.IMPORTANT)))}
    study_rate = None
    all_rows = Deviation.objects.filter(study=study, occurred_on__gte=start, occurred_on__lte=end).exclude(
        resolution=Deviation.Resolution.WITHDRAWN).count()
    if days.sum():
        study_rate = round(1000 * all_rows / days.sum(), 2)
    sites = []
    for site in site_list(user=request.user, study=study).order_by("number"):
        d = float(days.get(site.pk, 0.0))
        row = per_site.get(site.pk, {"n": 0, "important": 0})
        sites.append({"site": site, "n": row["n"], "important": row["important"], "days": int(d),
                      "rate": round(1000 * row["n"] / d, 2) if d else None})
    by_category = list(seen.values("category").annotate(
        n=Count("pk"), important=Count("pk", filter=Q(importance=Deviation.Importance.IMPORTANT))).order_by("-n"))
    labels = dict(Deviation.Category.choices)
    for row in by_category:
        row["label"] = labels.get(row["category"], row["category"])
    trend: dict[str, int] = {}
    for day in in_year.values_list("occurred_on", flat=True):
        trend[day.strftime("%Y-%m")] = trend.get(day.strftime("%Y-%m"), 0) + 1
    chart = {"sites": [s["site"].number for s in sites], "rates": [s["rate"] for s in sites],
             "study_rate": study_rate, "months": sorted(trend), "trend": [trend[m] for m in sorted(trend)]}
    return render(request, "deviations/dashboard.html", {
        "study": study, "sites": sites, "study_rate": study_rate, "by_category": by_category, "chart": chart,
        "start": start, "end": end, "open_capas": capa_list(user=request.user).filter(study=study).exclude(
            status__in=[Capa.Status.COMPLETED, Capa.Status.CANCELLED]).count()})


@login_required
@require_http_methods(["GET", "POST"])
def root_cause_list_view(request, pk: int):
    study = _study(request, pk)
    rows = root_cause_analysis_list(user=request.user).filter(study=study)
    if request.method == "POST":
        analysis = get_object_or_404(rows, pk=request.POST.get("analysis", "0") if
                                     request.POST.get("analysis", "").isdigit() else 0)
        if not deviation_user_can(user=request.user, capability="decide_root_cause", site=analysis.site):
            raise PermissionDenied("Your role may not decide root causes.")
        try:
            root_cause_decide(analysis=analysis, actor=request.user, accept=request.POST.get("accept") == "yes",
                              reason=request.POST.get("reason", ""), root_cause=request.POST.get("root_cause") or None,
                              note=request.POST.get("note", ""))
        except ValidationError as error:
            messages.error(request, _message(error))
        else:
            messages.success(request, "Decision recorded.")
        return redirect("study-root-causes", pk=study.pk)
    return render(request, "deviations/root_causes.html", {
        "study": study, "rows": rows.order_by("status", "-period_start", "site__number"),
        "root_causes": RootCause.choices,
        "can_decide": deviation_study_can(user=request.user, capability="decide_root_cause", study=study,
                                          at_a_site=True)})


class CapaForm(forms.Form):
    site = forms.ModelChoiceField(queryset=None)
    category = forms.ChoiceField(choices=Deviation.Category.choices)
    title = forms.CharField(max_length=255)
    corrective_action = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))
    preventive_action = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))
    owner = forms.ModelChoiceField(queryset=None)
    due_on = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    root_cause_analysis = forms.ModelChoiceField(queryset=None, required=False)
    reason = forms.CharField(max_length=1000, initial="CAPA opened")

    def __init__(self, *args, user, study, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = site_list(user=user, study=study).order_by("number")
        self.fields["owner"].queryset = get_user_model().objects.filter(
            is_active=True, memberships__study=study, memberships__is_active=True).distinct().order_by("username")
        self.fields["root_cause_analysis"].queryset = root_cause_analysis_list(user=user).filter(study=study)


@login_required
@require_http_methods(["GET", "POST"])
def capa_list_view(request, pk: int):
    study = _study(request, pk)
    form = CapaForm(request.POST or None, user=request.user, study=study,
                    initial={"root_cause_analysis": request.GET.get("analysis")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            capa = capa_create(actor=request.user, site=data["site"], category=data["category"], title=data["title"],
                               corrective_action=data["corrective_action"],
                               preventive_action=data["preventive_action"], owner=data["owner"],
                               due_on=data["due_on"], reason=data["reason"],
                               root_cause_analysis=data["root_cause_analysis"])
        except PermissionDenied as error:
            form.add_error(None, str(error))
        except ValidationError as error:
            form.add_error(None, _message(error))
        else:
            messages.success(request, "CAPA created.")
            return redirect("capa-detail", pk=capa.pk)
    return render(request, "deviations/capas.html", {
        "study": study, "rows": capa_list(user=request.user).filter(study=study), "form": form,
        "can_manage": deviation_study_can(user=request.user, capability="manage_capa", study=study, at_a_site=True)})


@login_required
@require_http_methods(["GET", "POST"])
def capa_detail_view(request, pk: int):
    capa = get_object_or_404(capa_list(user=request.user), pk=pk)
    if request.method == "POST":
        try:
            if request.POST.get("action") == "check":
                if not (capa.owner_id == request.user.pk or deviation_user_can(
                        user=request.user, capability="manage_capa", site=capa.site)):
                    raise PermissionDenied("Your role may not check this CAPA.")
                capa_effectiveness_check(capa=capa, actor=request.user)
            else:
                capa_update(capa=capa, actor=request.user, reason=request.POST.get("reason", ""),
                            status=request.POST.get("status", capa.status))
        except (ValidationError, PermissionDenied) as error:
            messages.error(request, _message(error))
        else:
            messages.success(request, "Saved, with your reason, in the audit trail.")
        return redirect("capa-detail", pk=capa.pk)
    history = list(capa.history.select_related("history_user").order_by("-history_date"))
    return render(request, "deviations/capa_detail.html", {
        "capa": capa, "study": capa.study, "history": history, "statuses": Capa.Status.choices,
        "can_edit": capa.owner_id == request.user.pk or deviation_user_can(
            user=request.user, capability="manage_capa", site=capa.site)})


@login_required
@require_http_methods(["GET", "POST"])
def compliance_report_list_view(request, pk: int):
    study = _study(request, pk)
    if not deviation_study_can(user=request.user, capability="read_study_deviations", study=study):
        raise Http404("No such study.")
    rows = compliance_report_list(user=request.user).filter(study=study)
    if request.method == "POST":
        report = get_object_or_404(rows, pk=request.POST.get("report", "0") if
                                   request.POST.get("report", "").isdigit() else 0)
        try:
            compliance_report_sign(report=report, actor=request.user, password=request.POST.get("password", ""),
                                   meaning=request.POST.get("meaning", ""))
        except (ValidationError, PermissionDenied) as error:
            messages.error(request, _message(error))
        else:
            messages.success(request, "Report signed.")
        return redirect("study-deviation-reports", pk=study.pk)
    return render(request, "deviations/reports.html", {
        "study": study, "rows": [(r, json.dumps(r.summary, indent=2)) for r in rows], "meanings": SIGNATURE_MEANINGS,
        "can_sign": deviation_study_can(user=request.user, capability="sign_report", study=study)})
