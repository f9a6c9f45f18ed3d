from django.contrib import admin

from deviations.models import Deviation
from studies.admin import AuditedAdmin


@admin.register(Deviation)
class DeviationAdmin(AuditedAdmin):
    list_display = ["id", "study", "site", "subject", "category", "importance", "status", "occurred_on"]
    list_filter = ["study", "category", "importance", "status", "source"]
    search_fields = ["subject__subject_id", "description", "term"]
    readonly_fields = ["reported_by"]
