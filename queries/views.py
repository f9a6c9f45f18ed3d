"""Pages of the data review: what the QueryAnalyzer found (to the site, held back, medical
review) and the rule catalogue with each rule's statistics; and of the QueryTracker: the query
inbox per role, the query page with its thread and transitions, raising a query, the metrics."""

import datetime

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, F, Q
from django.db.models.functions import Coalesce
from django.http import Http404, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.orchestrator import WorkflowCannotStart, workflow_start
from agents.services import WorkflowRunOverlap
from queries import lifecycle
from queries.metrics import query_metrics
from queries.models import AnalyzerPass, Discrepancy, EditCheck, Notification, Query
from queries.selectors import (
    discrepancy_list,
    edit_check_list,
    query_list,
    query_message_list,
    rule_statistics,
    study_for_review,
)
from studies.models import SITE_ROLES, StudyMembership
from studies.selectors import (
    CAPABILITIES,
    data_point_list,
    site_list,
    study_list,
    study_roles,
    study_user_can,
    study_user_can_at_a_site,
    subject_list,
    user_can,
)

PER_PAGE = 50
FILTERS = ("site", "rule_type", "severity", "category", "disposition", "status")


def _study_for_review(request, pk: int):
    study = study_for_review(user=request.user, pk=pk)
    if study is None:
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


# The query inbox, the query page and its transitions, raising a query, and the metrics dashboard
# (QueryTracker). Every query comes from query_list(user=...): another site's query is a 404.

INBOX_FILTERS = ("site", "severity", "category", "recipient", "origin")
STATE_VIEWS = {"outstanding": (Query.State.OPEN, Query.State.ANSWERED), "all": tuple(Query.State.values),
               **{state: (state,) for state in Query.State.values}}
# Sortable columns; "age" sorts on the start of the query (released, else raised), reversed.
INBOX_SORTS = {"id": F("id"), "age": Coalesce("released_at", "created_at"), "due": F("due_date"),
               "site": F("site__number"), "subject": F("subject__subject_id"), "severity": F("severity"),
               "state": F("state")}
BULK_ACTIONS = {"close": "Close", "cancel": "Cancel", "release": "Release to the site",
                "discard": "Discard (candidates)", "reassign": "Reassign the marking group"}
# The capability of each action (queries.lifecycle), and a CRA's own-query cancel.
BULK_CAPABILITIES = {action: {lifecycle.CAPABILITY[action]} | ({"cancel_own_query"} if action == "cancel" else set())
                     for action in BULK_ACTIONS}


def _inbox_rows(request, study, chosen: dict):
    rows = query_list(user=request.user).select_related("study", "data_point__item", "data_point__visit__definition")
    if study is not None:
        rows = rows.filter(study=study)
    rows = rows.filter(state__in=STATE_VIEWS.get(chosen["state"], STATE_VIEWS["outstanding"]))
    for name in INBOX_FILTERS:
        if chosen[name]:
            rows = rows.filter(**{"site__number" if name == "site" else name: chosen[name]})
    if chosen["q"]:
        rows = rows.filter(Q(subject__subject_id__icontains=chosen["q"]) | Q(rule_code__icontains=chosen["q"]))
    if chosen["overdue"]:
        rows = rows.filter(state=Query.State.OPEN, due_date__lt=timezone.now().date())
    key = chosen["sort"].lstrip("-")
    field = INBOX_SORTS.get(key, INBOX_SORTS["age"])
    descending = chosen["sort"].startswith("-") != (key == "age")
    return rows.order_by(field.desc(nulls_last=True) if descending else field.asc(nulls_last=True), "id")


def _user_roles(user, study) -> set[str]:
    if study is not None:
        return study_roles(user=user, study=study)
    return set(StudyMembership.objects.filter(user=user, is_active=True).values_list("role", flat=True))


def _bulk_actions(user, roles: set[str], counts: dict) -> dict:
    """The bulk actions some role of the user may take (queries_bulk checks every row again)."""
    capabilities = set().union(*(CAPABILITIES[role] for role in roles))
    candidates = counts.get(Query.State.CANDIDATE, 0)
    return {action: label for action, label in BULK_ACTIONS.items()
            if (user.is_superuser or capabilities & BULK_CAPABILITIES[action])
            and (candidates or action not in ("release", "discard"))}


def _sort_links(params, current: str) -> dict:
    """Per sortable column: the link (ascending, or descending when already ascending) and the
    aria-sort value of the current one."""
    links = {}
    for key in INBOX_SORTS:
        chosen = params.copy()
        chosen["sort"] = f"-{key}" if current == key else key
        state = {key: "ascending", f"-{key}": "descending"}.get(current, "")
        links[key] = {"url": "?" + chosen.urlencode(), "aria": state}
    return links


@login_required
@require_GET
def query_inbox_view(request, pk: int | None = None):
    """The queries the user's role works on: a site's staff their site, a CRA their sites, data
    managers the study. Site staff start on the open queries (to answer), the others on open and
    answered ones (to review); filters, sorting and bulk actions on the rest."""
    study = get_object_or_404(study_list(user=request.user), pk=pk) if pk is not None else None
    roles = _user_roles(request.user, study)
    chosen = {name: request.GET.get(name, "").strip() for name in (*INBOX_FILTERS, "state", "q", "overdue", "sort")}
    chosen["state"] = chosen["state"] or (Query.State.OPEN if roles and roles <= set(SITE_ROLES) else "outstanding")
    chosen["sort"] = chosen["sort"] or "-age"  # the oldest first
    page = Paginator(_inbox_rows(request, study, chosen), PER_PAGE).get_page(request.GET.get("page"))
    today = timezone.now().date()
    for query in page:
        query.age_days = max((today - (query.released_at or query.created_at).date()).days, 0)
        query.overdue = query.state == Query.State.OPEN and query.due_date is not None and query.due_date < today
    scope = query_list(user=request.user).filter(**({"study": study} if study else {}))
    counts = dict(scope.order_by().values_list("state").annotate(n=Count("id")))
    params = request.GET.copy()
    params.pop("page", None)
    return render(request, "queries/inbox.html", {
        "study": study, "page": page, "chosen": chosen, "querystring": params.urlencode(),
        "sorts": _sort_links(params, chosen["sort"]),
        "state_tabs": [("outstanding", "Open or answered", counts.get("open", 0) + counts.get("answered", 0)),
                       *[(value, label, counts.get(value, 0)) for value, label in Query.State.choices
                         if value != Query.State.CANDIDATE or counts.get(value)],
                       ("all", "All", sum(counts.values()))],
        "sites": site_list(user=request.user, study=study).order_by("number") if study else [],
        "choices": {"severity": Query.Severity.choices, "category": Query.Category.choices,
                    "recipient": Query.Recipient.choices, "origin": Query.Origin.choices},
        "bulk_actions": _bulk_actions(request.user, roles, counts), "recipients": Query.Recipient.choices,
        "resolutions": Query.Resolution.choices,
        "can_raise": study is not None and study_user_can_at_a_site(user=request.user, capability="raise_query",
                                                                    study=study),
    })


@login_required
@require_POST
def query_bulk_view(request, pk: int | None = None):
    """One action with one reason on the ticked queries, all or nothing (queries_bulk)."""
    study = get_object_or_404(study_list(user=request.user), pk=pk) if pk is not None else None
    back = reverse("study-queries", args=[study.pk]) if study else reverse("query-inbox")
    if request.POST.get("querystring"):
        back += "?" + QueryDict(request.POST["querystring"]).urlencode()
    ids = {int(i) for i in request.POST.getlist("ids") if i.isascii() and i.isdigit()}
    action = request.POST.get("action", "")
    queries = query_list(user=request.user).filter(pk__in=ids, **({"study": study} if study else {}))
    if not ids or queries.count() != len(ids):
        messages.error(request, "Nothing was changed: tick the queries to act on, among those listed.")
        return redirect(back)
    options = {"reassign": {"recipient": request.POST.get("recipient", "")},
               "close": {"resolution": request.POST.get("resolution") or Query.Resolution.OTHER}}.get(action, {})
    try:
        lifecycle.queries_bulk(queries=queries, actor=request.user, action=action,
                               reason=request.POST.get("reason", ""), **options)
    except lifecycle.TransitionRefused as refused:
        messages.error(request, f"Nothing was changed. {' '.join(_reasons(refused))}")
    else:
        messages.success(request, f"{BULK_ACTIONS[action]}: done on {len(ids)} quer{'y' if len(ids) == 1 else 'ies'}.")
    return redirect(back)


def _reasons(refused: lifecycle.TransitionRefused) -> list[str]:
    """The refusal, then the detailed reasons it does not already say (the compliance check's)."""
    return [refused.reason, *(reason for reason in refused.reasons if reason not in refused.reason)]


def _visible_query(request, pk: int) -> Query:
    return get_object_or_404(query_list(user=request.user).select_related(
        "study", "created_by", "data_point__item", "data_point__form", "data_point__visit__definition"), pk=pk)


def _query_page(request, query: Query, *, refused: dict | None = None, status: int = 200):
    """The query page: its facts, thread, data point with its audit trail, the query's own audit
    trail, and a form for each transition the user may make now."""
    allowed = [t for t in lifecycle.TRANSITIONS
               if lifecycle.query_transition_allowed(user=request.user, query=query, transition=t)]
    point_history = []
    if query.data_point is not None:
        point_history = query.data_point.history.select_related("history_user").order_by("-history_date",
                                                                                        "-history_id")
    return render(request, "queries/query_detail.html", {
        "query": query, "thread": query_message_list(user=request.user, query=query),
        "history": query.history.select_related("history_user").order_by("-history_date", "-history_id"),
        "point": query.data_point, "point_history": point_history, "allowed": allowed,
        "refused": refused or {}, "posted": request.POST if refused else {},
        "resolutions": Query.Resolution.choices, "recipients": Query.Recipient.choices,
        "overdue": query.state == Query.State.OPEN and query.due_date is not None
        and query.due_date < timezone.now().date(),
    }, status=status)


@login_required
@require_GET
def query_detail_view(request, pk: int):
    return _query_page(request, _visible_query(request, pk))


@login_required
@require_POST
def query_transition_view(request, pk: int, transition: str):
    """One form of the query page, through its lifecycle service; a refusal shows the page again
    with the reasons next to the form and the typed text kept."""
    query = _visible_query(request, pk)
    if transition not in lifecycle.TRANSITIONS:
        raise Http404("No such transition.")
    text, reason = request.POST.get("text", ""), request.POST.get("reason", "")
    arguments = {"release": {"reason": reason}, "edit": {"text": text, "reason": reason},
                 "discard": {"reason": reason}, "answer": {"text": text}, "requery": {"text": text},
                 "close": {"reason": reason, "resolution": request.POST.get("resolution") or Query.Resolution.OTHER},
                 "cancel": {"reason": reason}, "reassign": {"recipient": request.POST.get("recipient", ""),
                                                            "reason": reason}}[transition]
    service = getattr(lifecycle, f"query_{transition}")
    try:
        query = service(query=query, actor=request.user, **arguments)
    except lifecycle.TransitionRefused as refused:
        return _query_page(request, query, refused={transition: _reasons(refused)}, status=refused.status)
    messages.success(request, f"Query {query.pk} is now {query.get_state_display().lower()}.")
    return redirect("query-detail", pk=query.pk)


class QueryRaiseForm(forms.Form):
    data_point = forms.TypedChoiceField(label="Data point", coerce=int, required=False, empty_value=None)
    text = forms.CharField(label="Query text", widget=forms.Textarea(attrs={"rows": 4}), max_length=2000,
                           help_text="Neutral and specific: form, visit, item, value and rule; ask the site to "
                                     "verify against source. No suggested value, no patient identifiers.")
    recipient = forms.ChoiceField(label="Marking group (who answers)", choices=Query.Recipient.choices)
    category = forms.ChoiceField(choices=Query.Category.choices, initial=Query.Category.OTHER)
    severity = forms.ChoiceField(choices=Query.Severity.choices, initial=Query.Severity.MINOR)

    def __init__(self, *args, points=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["data_point"].choices = [("", "None: the query is about the subject")] + [
            (p.pk, f"{p.visit.definition.name} · {p.form.name} · {p.item.label} = {p.raw_value or 'missing'}")
            for p in points]


def _int(value) -> int | None:
    return int(value) if value and str(value).isascii() and str(value).isdigit() else None


@login_required
@require_http_methods(["GET", "POST"])
def query_raise_view(request, pk: int):
    """Raise a manual query: first the subject (or come with ?data_point=ID), then the text, the
    marking group and the data point. Only subjects at sites where the user may raise queries."""
    study = get_object_or_404(study_list(user=request.user), pk=pk)
    sites = site_list(user=request.user, study=study)
    if not study_user_can(user=request.user, capability="raise_query", study=study):  # a CRA: per site
        sites = [s.pk for s in sites if user_can(user=request.user, capability="raise_query", site=s)]
    if not sites:
        raise Http404("No such study.")
    subjects = subject_list(user=request.user).filter(site_id__in=sites).order_by("subject_id")
    point = data_point_list(user=request.user).filter(subject__in=subjects,
                                                      pk=_int(request.GET.get("data_point"))).first()
    subject = point.subject if point else subjects.filter(
        pk=_int(request.POST.get("subject") or request.GET.get("subject"))).first()
    points = list(data_point_list(user=request.user).filter(subject=subject).order_by(
        "visit__definition__order", "form__order", "item__order", "pk")) if subject else []
    form = QueryRaiseForm(request.POST or None, points=points, initial={"data_point": point.pk if point else None})
    if request.method == "POST" and subject is not None and form.is_valid():
        data = form.cleaned_data
        try:
            query = lifecycle.query_create(
                actor=request.user, study=study, subject=subject,
                data_point=next((p for p in points if p.pk == data["data_point"]), None), text=data["text"],
                recipient=data["recipient"], category=data["category"], severity=data["severity"],
                origin=Query.Origin.MANUAL)
        except lifecycle.TransitionRefused as refused:
            for reason in _reasons(refused):
                form.add_error("text", reason)
        else:
            messages.success(request, f"Query {query.pk} raised ({query.get_state_display().lower()}).")
            return redirect("query-detail", pk=query.pk)
    return render(request, "queries/query_raise.html", {"study": study, "subjects": subjects, "subject": subject,
                                                        "form": form}, status=400 if form.errors else 200)


@login_required
@require_GET
def query_metrics_view(request, pk: int):
    """The metrics dashboard of a study (queries.metrics), over the queries the user may read."""
    study = get_object_or_404(study_list(user=request.user), pk=pk)
    try:
        as_of = datetime.date.fromisoformat(request.GET["as_of"]) if request.GET.get("as_of") else None
    except ValueError:
        as_of = None
        messages.error(request, "The date must be written YYYY-MM-DD; the metrics are as of today.")
    metrics = query_metrics(queries=query_list(user=request.user).filter(study=study), today=as_of)
    recipients = dict(Query.Recipient.choices)
    for row in metrics["by_recipient"]:
        row["label"] = recipients.get(row["recipient"], row["recipient"])
    groups = [("Per marking group", metrics["by_recipient"], "marking group", "by-recipient"),
              ("Per rule", [{"label": row["rule"], **row} for row in metrics["by_rule"]], "rule", "by-rule"),
              ("Per site", [{"label": row["site"], **row} for row in metrics["by_site"]], "site", "by-site")]
    percent = {name: None if metrics[name][rate] is None else 100 * metrics[name][rate]
               for name, rate in (("sla", "breach_rate"), ("requery", "rate"))}
    return render(request, "queries/metrics.html", {"study": study, "metrics": metrics, "groups": groups,
                                                    "percent": percent})


@login_required
@require_http_methods(["GET", "POST"])
def notification_list_view(request):
    """The user's in-app notifications (query reminders, overdue notices, escalations); POST marks
    the unread ones read."""
    mine = Notification.objects.filter(user=request.user).select_related("query", "query__study")
    if request.method == "POST":
        marked = mine.filter(read_at__isnull=True).update(read_at=timezone.now())
        messages.success(request, f"{marked} notification{'s' if marked != 1 else ''} marked read.")
        return redirect("notification-list")
    page = Paginator(mine, 50).get_page(request.GET.get("page"))
    return render(request, "queries/notifications.html",
                  {"page": page, "unread": mine.filter(read_at__isnull=True).count()})
