"""Source documents and SDV progress on pages owned by other apps: the subject page's drop zone
per visit (and for the subject), the site risk page's SDV progress. Read through the scoped
selectors with the request's user."""

from django import template

from sdv.documents import may_upload, source_document_list
from sdv.selectors import risk_readable
from sdv.verification.selectors import progress_totals, sdv_data_points, sdv_progress

register = template.Library()


@register.inclusion_tag("sdv/_documents_panel.html", takes_context=True)
def source_documents_panel(context, subject, visit=None):
    """The documents of a visit (or of the subject as a whole) and a drop zone to upload more."""
    request = context["request"]
    documents = source_document_list(user=request.user).filter(subject=subject)
    documents = documents.filter(visit=visit) if visit is not None else documents.filter(visit__isnull=True)
    return {"subject": subject, "visit": visit, "documents": documents.order_by("uploaded_at"),
            "can_upload": may_upload(user=request.user, site=subject.site),
            "can_review": risk_readable(user=request.user, study=subject.study),
            "next": request.get_full_path(), "csrf_token": context.get("csrf_token"),
            "in_workspace": context.get("in_workspace", False)}


@register.inclusion_tag("sdv/_site_progress.html", takes_context=True)
def sdv_site_progress(context, site):
    """Values verified / planned at a site (the SDV plan's progress), linked to the workspace."""
    request = context["request"]
    rows = sdv_progress(sdv_data_points(user=request.user).filter(subject__site=site), by=["subject__site"])
    return {"site": site, "totals": progress_totals(rows)}
