"""The CRA's SDV workspace (server-rendered; HTMX swaps a row after an action):

- /studies/<id>/sdv/: progress per site (values verified / planned), documents waiting;
- /studies/<id>/sdv/sites/<id>/: the site's subjects x visits, progress in each cell;
- /sdv/visits/<id>/: one subject's visit: the SDV plan's items (critical first), each EDC value
  beside the source page cropped to its box, the agent's verdict, and one click to verify, flag
  or raise a query; manual SDV for values without a document; the visit's documents, and
  uploading more by drag and drop (several files at once);
- the crops, the page images and the files themselves, each read through the scoped selectors.

Readers: the study-wide roles and the CRAs of the site (as the SDV plan); acting on a verdict
needs the `verify_source` capability at the site (sdv.verification.services checks it)."""

import io
from collections import defaultdict

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from PIL import ImageDraw

from agents.orchestrator import WorkflowCannotStart, workflow_start
from agents.services import WorkflowRunOverlap
from queries.selectors import query_list
from sdv.documents import document_path, document_upload, may_upload, source_document_list
from sdv.documents_api import document_file_response
from sdv.models import SourceDocument, SourcePage, SourceVerification
from sdv.selectors import risk_readable
from sdv.verification import files, ocr
from sdv.verification.selectors import progress_totals, sdv_data_points, sdv_progress, source_verification_list
from sdv.verification.services import (
    data_point_verify_manually,
    verification_confirm,
    verification_query_raise,
)
from studies.models import DataPoint, SubjectVisit
from studies.selectors import site_list, study_list, subject_visit_list, user_can

V = SourceVerification.Verdict
VERDICT_ORDER = {V.DISCREPANCY: 0, V.NEEDS_REVIEW: 1, V.VERIFIED: 2, V.NOT_FOUND: 3}
CROP_MARGIN = 24  # pixels around the row (horizontally; a third of it above and below)


def _study(request, pk):
    study = get_object_or_404(study_list(user=request.user), pk=pk)
    if not risk_readable(user=request.user, study=study):
        raise Http404("No such study.")
    return study


def _by(rows, *keys) -> dict:
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in rows}


@login_required
@require_GET
def sdv_overview_view(request, pk: int):
    study = _study(request, pk)
    points = sdv_data_points(user=request.user).filter(study=study)
    per_site = _by(sdv_progress(points, by=["subject__site"]), "subject__site")
    documents = source_document_list(user=request.user).filter(study=study)
    waiting = defaultdict(int)
    for site_id in documents.filter(status=SourceDocument.Status.UPLOADED).values_list("site_id", flat=True):
        waiting[site_id] += 1
    sites = [{"site": site, "progress": per_site.get(site.pk, {"planned": 0, "verified": 0, "discrepancy": 0}),
              "waiting": waiting[site.pk]} for site in site_list(user=request.user, study=study).order_by("number")]
    for row in sites:
        p = row["progress"]
        row["percent"] = round(100 * p["verified"] / p["planned"]) if p["planned"] else None
    return render(request, "sdv/sdv_overview.html", {"study": study, "sites": sites,
                                                     "totals": progress_totals(list(per_site.values()))})


@login_required
@require_GET
def sdv_site_view(request, pk: int, site_pk: int):
    study = _study(request, pk)
    site = get_object_or_404(site_list(user=request.user, study=study), pk=site_pk)
    points = sdv_data_points(user=request.user).filter(subject__site=site)
    cells = _by(sdv_progress(points, by=["visit"]), "visit")
    visits = list(subject_visit_list(user=request.user).filter(subject__site=site)
                  .order_by("subject__subject_id", "definition__order", "repeat_key"))
    definitions = sorted({v.definition for v in visits}, key=lambda d: (d.order, d.oid))
    rows = {}
    for visit in visits:
        row = rows.setdefault(visit.subject_id, {"subject": visit.subject, "cells": {}, "planned": 0, "verified": 0})
        cell = cells.get(visit.pk, {"planned": 0, "verified": 0, "discrepancy": 0})
        row["cells"][visit.definition_id] = {**cell, "visit": visit}
        row["planned"] += cell["planned"]
        row["verified"] += cell["verified"]
    per_definition = {d.pk: {"planned": 0, "verified": 0} for d in definitions}
    for row in rows.values():
        row["ordered"] = [row["cells"].get(d.pk) for d in definitions]
        for d in definitions:
            if d.pk in row["cells"]:
                per_definition[d.pk]["planned"] += row["cells"][d.pk]["planned"]
                per_definition[d.pk]["verified"] += row["cells"][d.pk]["verified"]
    return render(request, "sdv/sdv_site.html", {
        "study": study, "site": site, "definitions": definitions, "rows": list(rows.values()),
        "per_definition": [per_definition[d.pk] for d in definitions],
        "totals": progress_totals(list(cells.values()))})


def _visit_items(request, visit: SubjectVisit) -> list[dict]:
    """The visit's values, planned first and critical first, each with its best verdict."""
    points = list(DataPoint.objects.filter(visit=visit).select_related("item", "form").order_by(
        "form__order", "item__order", "item__oid", "repeat_key"))
    verifications = defaultdict(list)
    found = list(source_verification_list(user=request.user).filter(visit=visit).select_related("query"))
    # A candidate query is data management's until released: a CRA is told one exists, not shown it.
    visible = set(query_list(user=request.user).filter(pk__in=[v.query_id for v in found if v.query_id])
                  .values_list("pk", flat=True))
    for v in found:
        v.query_visible = v.query_id in visible
        verifications[v.data_point_id].append(v)
    items = []
    for point in points:
        found = sorted(verifications[point.pk], key=lambda v: (v.method != SourceVerification.Method.DOCUMENT,
                                                                VERDICT_ORDER.get(v.verdict, 9), -v.pk))
        document_verdicts = [v for v in found if v.document_id]
        best = document_verdicts[0] if document_verdicts else None
        manual = next((v for v in found if not v.document_id), None)
        items.append({"point": point, "best": best, "manual": manual, "others": document_verdicts[1:],
                      "planned": point.sdv_state != DataPoint.SdvState.NOT_REQUIRED,
                      "stale": best is not None and best.data_point_version != point.version,
                      "change": _last_change(point) if point.version > 1 else None})
    items.sort(key=lambda i: (not i["planned"], not i["point"].item.critical))
    return items


def _last_change(point: DataPoint):
    """The history row of the value's last change (who, when, why), to show an un-verified value."""
    return point.history.filter(version=point.version).select_related("history_user").order_by("history_date").first()


def _visit(request, pk: int) -> SubjectVisit:
    visit = get_object_or_404(subject_visit_list(user=request.user).select_related("subject__site", "study"), pk=pk)
    if not risk_readable(user=request.user, study=visit.study):
        raise Http404("No such visit.")
    return visit


@login_required
@require_GET
def sdv_visit_view(request, pk: int):
    visit = _visit(request, pk)
    site = visit.subject.site
    items = _visit_items(request, visit)
    planned = [i for i in items if i["planned"]]
    return render(request, "sdv/sdv_visit.html", {
        "visit": visit, "subject": visit.subject, "site": site, "study": visit.study, "items": items,
        "documents": source_document_list(user=request.user).filter(visit=visit).order_by("uploaded_at"),
        "can_verify": user_can(user=request.user, capability="verify_source", site=site),
        "can_upload": may_upload(user=request.user, site=site),
        "progress": {"planned": len(planned), "verified": sum(i["point"].sdv_state == "verified" for i in planned)},
        "verdicts": V, "in_workspace": True})


def _back(request, visit: SubjectVisit, anchor: str = "") -> HttpResponse:
    return redirect(f"{reverse('sdv-visit', args=[visit.pk])}{anchor}")


def _row_response(request, visit: SubjectVisit, point_id: int) -> HttpResponse:
    item = next(i for i in _visit_items(request, visit) if i["point"].pk == point_id)
    can_verify = user_can(user=request.user, capability="verify_source", site=visit.subject.site)
    return render(request, "sdv/_item_row.html", {"item": item, "can_verify": can_verify, "visit": visit})


@login_required
@require_POST
def sdv_verification_action_view(request, pk: int):
    """verify / flag / query on one verdict (a form POST, or HTMX swapping the row)."""
    verification = get_object_or_404(source_verification_list(user=request.user), pk=pk)
    action, reason = request.POST.get("action", ""), request.POST.get("reason", "")
    try:
        if action == "verify":
            verification_confirm(verification=verification, actor=request.user, verdict=V.VERIFIED, reason=reason)
            note = f"{verification.item.label}: verified."
        elif action == "flag":
            verification_confirm(verification=verification, actor=request.user, verdict=V.DISCREPANCY, reason=reason)
            note = f"{verification.item.label}: flagged as a discrepancy."
        elif action == "query":
            query, created = verification_query_raise(verification=verification, actor=request.user)
            note = f"{verification.item.label}: query {query.pk} {'raised' if created else 'already active'}."
        else:
            raise ValidationError({"action": "Choose verify, flag or query."})
    except (ValidationError, PermissionDenied) as error:
        text = "; ".join(error.messages) if isinstance(error, ValidationError) else str(error)
        messages.error(request, f"{verification.item.label}: {text}")
        if request.headers.get("HX-Request"):
            response = _row_response(request, verification.visit, verification.data_point_id)
            response["HX-Trigger"] = "sdv-refused"
            return response
        return _back(request, verification.visit, f"#dp-{verification.data_point_id}")
    messages.success(request, note)
    if request.headers.get("HX-Request"):
        return _row_response(request, verification.visit, verification.data_point_id)
    return _back(request, verification.visit, f"#dp-{verification.data_point_id}")


@login_required
@require_POST
def sdv_manual_view(request, pk: int):
    """Manual SDV of one value against paper on site."""
    point = get_object_or_404(sdv_data_points(user=request.user).select_related("visit"), pk=pk)
    try:
        data_point_verify_manually(data_point=point, actor=request.user,
                                   verdict=request.POST.get("verdict", V.VERIFIED),
                                   reason=request.POST.get("reason", ""))
        messages.success(request, f"{point.item.label}: verified against the source on site.")
    except (ValidationError, PermissionDenied) as error:
        messages.error(request, "; ".join(getattr(error, "messages", [str(error)])))
    if request.headers.get("HX-Request"):
        return _row_response(request, point.visit, point.pk)
    return _back(request, point.visit, f"#dp-{point.pk}")


@login_required
@require_POST
def sdv_read_view(request, pk: int):
    """Start the source_verification workflow for the visit's study (documents waiting are read)."""
    visit = _visit(request, pk)
    if not user_can(user=request.user, capability="verify_source", site=visit.subject.site) and not may_upload(
            user=request.user, site=visit.subject.site):
        raise PermissionDenied("Your role may not start the reading of documents.")
    try:
        run = workflow_start(name="source_verification", study_id=visit.study_id, actor=request.user)
        messages.success(request, f"Reading the documents (run {run.pk}). Reload in a moment for the verdicts.")
    except (WorkflowRunOverlap, WorkflowCannotStart) as error:
        messages.info(request, f"Already reading: {error}")
    return _back(request, visit)


@login_required
@require_POST
def sdv_upload_view(request):
    """Upload one or more files (the form's fallback of the drag-and-drop zone) for a subject or visit."""
    study = get_object_or_404(study_list(user=request.user), pk=request.POST.get("study") or 0) \
        if (request.POST.get("study") or "").isdigit() else None
    if study is None:
        raise Http404("No such study.")
    uploads = request.FILES.getlist("file")
    if not uploads:
        messages.error(request, "Choose or drop at least one file.")
    for upload in uploads:
        try:
            document, created = document_upload(study=study, subject_id=request.POST.get("subject_id", ""),
                                                visit_oid=request.POST.get("visit_oid", ""), upload=upload,
                                                actor=request.user)
        except (ValidationError, PermissionDenied) as error:
            messages.error(request, f"{upload.name}: {'; '.join(getattr(error, 'messages', [str(error)]))}")
            continue
        messages.success(request, f"{upload.name}: {'uploaded' if created else 'already uploaded'} "
                                  f"(document {document.pk}).")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("study-detail", args=[study.pk])
    return redirect(target)


# --- Files and images ------------------------------------------------------------------------------
@login_required
@require_GET
def source_document_file_view(request, pk: int):
    return document_file_response(get_object_or_404(source_document_list(user=request.user), pk=pk))


def _page_image(document: SourceDocument, page: SourcePage):
    image = files.page_image(document_path(document), document.content_type, page.number, dpi=page.dpi,
                             max_pixels=settings.SDV_MAX_IMAGE_PIXELS)
    return ocr.transformed(image, rotation=page.rotation, skew=page.skew)


def _png(image) -> HttpResponse:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    response = HttpResponse(buffer.getvalue(), content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_GET
def source_page_image_view(request, pk: int, number: int):
    """A page as the agent read it (rotated and deskewed), at most 1200 pixels wide."""
    document = get_object_or_404(source_document_list(user=request.user), pk=pk)
    page = get_object_or_404(SourcePage, document=document, number=number)
    image = _page_image(document, page)
    if image.width > 1200:
        image = image.resize((1200, round(image.height * 1200 / image.width)))
    return _png(image)


@login_required
@require_GET
def source_verification_crop_view(request, pk: int):
    """The source page cropped to the verdict's row, the value boxed: what the CRA compares."""
    verification = get_object_or_404(source_verification_list(user=request.user), pk=pk)
    if not verification.document_id or not verification.page or not verification.bbox:
        raise Http404("Nothing on the document to show.")
    page = get_object_or_404(SourcePage, document_id=verification.document_id, number=verification.page)
    image = _page_image(verification.document, page).convert("RGB")
    x0, y0, x1, y1 = verification.row_bbox or verification.bbox
    box = (max(0, x0 - CROP_MARGIN), max(0, y0 - CROP_MARGIN // 3), min(image.width, x1 + CROP_MARGIN),
           min(image.height, y1 + CROP_MARGIN // 3))
    a, b, c, d = verification.bbox
    ImageDraw.Draw(image).rectangle((a - 4, b - 4, c + 4, d + 4), outline=(200, 30, 30), width=3)
    crop = image.crop(box)
    if crop.width > 900:
        crop = crop.resize((900, max(1, round(crop.height * 900 / crop.width))))
    return _png(crop)
