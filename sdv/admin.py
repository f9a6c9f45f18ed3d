from django.contrib import admin

from sdv.models import KriDefinition, RiskConfig, SdvPlan, SiteRiskAssessment, SourceDocument
from studies.admin import AuditedAdmin


@admin.register(SourceDocument)
class SourceDocumentAdmin(AuditedAdmin):
    list_display = ["id", "study", "site", "subject", "visit", "status", "uploaded_at"]
    list_filter = ["study", "status"]
    readonly_fields = ["sha256", "uploaded_by"]


class ReadOnlyAuditedAdmin(AuditedAdmin):
    """Listed with their history for review; changed only through the services (the API), which
    check a definition as the engine reads it, raise its version and require a reason."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(KriDefinition)
class KriDefinitionAdmin(ReadOnlyAuditedAdmin):
    list_display = ["kri_id", "study", "level", "name", "analysis", "thresholds", "active", "version"]
    list_filter = ["study", "level", "analysis", "active"]


@admin.register(RiskConfig)
class RiskConfigAdmin(ReadOnlyAuditedAdmin):
    list_display = ["study", "medium_from", "high_from", "first_subjects_fully", "version"]


@admin.register(SiteRiskAssessment)
class SiteRiskAssessmentAdmin(ReadOnlyAuditedAdmin):
    study_path = "snapshot__study"
    list_display = ["site", "snapshot", "risk_score", "tier", "previous_tier"]
    list_filter = ["tier"]


@admin.register(SdvPlan)
class SdvPlanAdmin(ReadOnlyAuditedAdmin):
    study_path = "site__study"
    list_display = ["site", "tier", "share", "first_subjects", "updated_at"]
    list_filter = ["tier"]
