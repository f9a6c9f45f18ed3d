"""Server-rendered pages. Every object comes from a selector scoped by the user's access, so an
object outside that scope is a 404 exactly like one that does not exist (no hint that it does)."""

from itertools import groupby

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods
from django.views.decorators.vary import vary_on_headers

from deviations.models import Deviation
from deviations.selectors import deviation_list
from queries.models import Query
from queries.selectors import query_list
from sdv.selectors import risk_readable
from studies.audit import ReasonRequired
from studies.forms import COMMON_CHANGE_REASONS, DataPointChangeForm, SubjectFilterForm
from studies.models import Role
from studies.selectors import (
    data_point_list,
    site_list,
    study_list,
    study_roles,
    study_user_can,
    study_user_can_at_a_site,
    subject_list,
    subject_visit_list,
    user_can,
)
from studies.services import StaleVersion, data_point_update

SUBJECTS_PER_PAGE = 50
OPEN_QUERY_STATES = (Query.State.OPEN, Query.State.ANSWERED)


def _role_labels(roles) -> list[str]:
    return sorted(Role(role).label for role in roles)


def _count_per_site(queryset, site_field: str):
    """A correlated COUNT per site. Separate subqueries, not joined Count()s: joining subjects,
    data points and queries in one query multiplies the rows and the work."""
    counted = queryset.filter(**{site_field: OuterRef("pk")}).order_by().values(site_field)
    return Coalesce(Subquery(counted.annotate(n=Count("pk")).values("n"), output_field=IntegerField()), 0)


@login_required
@require_GET
def study_list_view(request):
    studies = [
        {"study": study, "roles": _role_labels(study_roles(user=request.user, study=study)),
         "site_count": study.site_count}
        for study in study_list(user=request.user).annotate(
            site_count=Count("sites", filter=Q(sites__in=site_list(user=request.user)))
        )
    ]
    return render(request, "studies/study_list.html", {"studies": studies})


@login_required
@require_GET
@vary_on_headers("HX-Request")
def study_detail_view(request, pk: int):
    study = get_object_or_404(study_list(user=request.user), pk=pk)
    sites = site_list(user=request.user, study=study)

    filter_form = SubjectFilterForm(request.GET or None, sites=sites)
    subjects = filter_form.filter(subject_list(user=request.user).filter(study=study).order_by("subject_id"))
    page = Paginator(subjects, SUBJECTS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"study": study, "filter_form": filter_form, "page": page, "querystring": _without_page(request)}

    # The subject search swaps only the table; a history restore needs the whole page.
    if request.headers.get("HX-Request") and not request.headers.get("HX-History-Restore-Request"):
        return render(request, "studies/_subject_table.html", context)

    site_rows = list(sites.annotate(
        subject_count=_count_per_site(subject_list(user=request.user), "site"),
        data_point_count=_count_per_site(data_point_list(user=request.user), "subject__site"),
        open_query_count=_count_per_site(query_list(user=request.user).filter(state__in=OPEN_QUERY_STATES), "site"),
        deviation_count=_count_per_site(deviation_list(user=request.user).exclude(
            resolution=Deviation.Resolution.WITHDRAWN), "site"),
    ).order_by("number"))
    totals = {
        field: sum(getattr(site, field) for site in site_rows)
        for field in ("subject_count", "data_point_count", "open_query_count", "deviation_count")
    }
    roles = _role_labels(study_roles(user=request.user, study=study))
    if request.user.is_superuser and not roles:
        roles = ["Superuser"]
    context |= {"sites": site_rows, "totals": totals, "roles": roles,
                "can_read_imports": study_user_can(user=request.user, capability="read_imports", study=study),
                "can_read_risk": risk_readable(user=request.user, study=study),
                "can_review": study_user_can_at_a_site(user=request.user, capability="review_discrepancies",
                                                      study=study)}
    return render(request, "studies/study_detail.html", context)


def _without_page(request) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


@login_required
@require_GET
def subject_detail_view(request, pk: int):
    subject = get_object_or_404(subject_list(user=request.user), pk=pk)
    visits = subject_visit_list(user=request.user).filter(subject=subject).order_by(
        "definition__order", "definition__planned_day", "repeat_key"
    )
    data_points = (
        data_point_list(user=request.user).filter(subject=subject)
        .annotate(open_query_count=Count("queries", filter=Q(queries__state__in=OPEN_QUERY_STATES)))
        .order_by("visit_id", "form__order", "form__oid", "item__order", "item__oid", "repeat_key")
    )
    forms_by_visit = {
        visit_id: [(form, list(points)) for form, points in groupby(visit_points, key=lambda dp: dp.form)]
        for visit_id, visit_points in groupby(data_points, key=lambda dp: dp.visit_id)
    }
    sections = [{"visit": visit, "forms": forms_by_visit.get(visit.id, [])} for visit in visits]
    deviations = deviation_list(user=request.user).filter(subject=subject).order_by("occurred_on", "pk")
    return render(request, "studies/subject_detail.html", {"subject": subject, "sections": sections,
                                                           "deviations": deviations})


@login_required
@require_http_methods(["GET", "POST"])
def data_point_history_view(request, pk: int):
    data_point = get_object_or_404(data_point_list(user=request.user), pk=pk)
    can_enter_data = user_can(user=request.user, capability="enter_data", site=data_point.subject.site)

    form = DataPointChangeForm(initial={"raw_value": data_point.raw_value, "version": data_point.version})
    if request.method == "POST":
        if not can_enter_data:
            # The user may read this data point (else 404 above), so refusing the write leaks nothing.
            raise PermissionDenied("Your role does not allow data entry at this site.")
        form = DataPointChangeForm(request.POST)
        if form.is_valid():
            try:
                # A stale page must not overwrite a change the user has not seen (lost update): the
                # service compares the version under the row lock.
                updated = data_point_update(data_point=data_point, raw_value=form.cleaned_data["raw_value"],
                                            actor=request.user, reason=form.cleaned_data["reason"],
                                            expected_version=form.cleaned_data["version"])
            except StaleVersion:
                data_point.refresh_from_db()
                form.add_error(None, f"Someone changed this value since you opened the page (now version "
                                     f"{data_point.version}). Review the audit trail below and try again.")
            except ValidationError as error:
                form.add_error("raw_value", error.messages)
            except ReasonRequired as error:
                form.add_error("reason", str(error))
            else:
                if updated.version == data_point.version:
                    messages.info(request, "The value is unchanged; nothing was recorded.")
                else:
                    messages.success(request, f"Value changed to {updated.raw_value!r} (version {updated.version}).")
                return redirect("data-point-history", pk=data_point.pk)

    return render(request, "studies/data_point_history.html", {
        "data_point": data_point, "history": _history_newest_first(data_point),
        "form": form if can_enter_data else None, "common_reasons": COMMON_CHANGE_REASONS,
    })


def _history_newest_first(data_point) -> list:
    """Every history row of `data_point`, each with the value it replaced (`previous_value`)."""
    history = list(data_point.history.select_related("history_user").order_by("history_date", "history_id"))
    for previous, row in zip([None, *history], history, strict=False):
        row.previous_value = previous.raw_value if previous is not None else None
    return history[::-1]
