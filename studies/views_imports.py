"""Import pages: upload a file into a study, list its imports, follow one live (HTMX polling)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from studies.forms import ImportUploadForm
from studies.ingest.dispatch import import_upload
from studies.models import Import
from studies.selectors import import_list, study_list, study_user_can

IMPORTS_PER_PAGE = 25


@login_required
@require_http_methods(["GET", "POST"])
def study_imports_view(request, pk: int):
    study = get_object_or_404(study_list(user=request.user), pk=pk)
    if not study_user_can(user=request.user, capability="read_imports", study=study):
        raise PermissionDenied("Your role does not give access to imports.")
    can_import = study_user_can(user=request.user, capability="import_data", study=study)
    form = ImportUploadForm()
    if request.method == "POST":
        if not can_import:
            raise PermissionDenied("Only data managers and sponsors may import data.")
        form = ImportUploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                record = import_upload(study=study, actor=request.user, upload=form.cleaned_data["file"],
                                       full_snapshot=form.cleaned_data["full_snapshot"])
            except ValidationError as error:
                form.add_error("file", error.message_dict.get("file", error.messages))
            else:
                messages.success(request, f"{record.filename} received; the import runs in the background.")
                return redirect("import-detail", pk=record.pk)
    imports = import_list(user=request.user).filter(study=study)
    page = Paginator(imports, IMPORTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "studies/imports.html", {
        "study": study, "page": page, "form": form if can_import else None,
    })


@login_required
@require_GET
def import_detail_view(request, pk: int):
    record = get_object_or_404(import_list(user=request.user), pk=pk)
    context = {"record": record, "finished": record.status in (Import.Status.SUCCEEDED, Import.Status.FAILED),
               "counts": {k: v for k, v in record.counts.items() if k != "stored_as"}}
    template = "studies/_import_status.html" if request.headers.get("HX-Request") else "studies/import_detail.html"
    return render(request, template, context)
