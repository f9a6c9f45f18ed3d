from django.contrib import admin

from sdv.models import SourceDocument
from studies.admin import AuditedAdmin


@admin.register(SourceDocument)
class SourceDocumentAdmin(AuditedAdmin):
    list_display = ["id", "study", "site", "subject", "visit", "status", "uploaded_at"]
    list_filter = ["study", "status"]
    readonly_fields = ["sha256", "uploaded_by"]
