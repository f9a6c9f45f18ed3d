from django.contrib import admin

from sdv.models import (
    KriDefinition,
    RiskConfig,
    SdvPlan,
    SiteRiskAssessment,
    SourceDocument,
    SourcePage,
    SourceVerification,
)
from studies.admin import AuditedAdmin


class SourceReadOnlyAdmin(AuditedAdmin):
    """Listed with their history; written only by the upload service, the agent and the CRA's
    confirmations (which check access and record a reason), never edited here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(SourceDocument)
class SourceDocumentAdmin(SourceReadOnlyAdmin):
    list_display = ["id", "study", "site", "subject", "visit", "content_type", "page_count", "status", "uploaded_at"]
    list_filter = ["study", "status", "content_type"]


@admin.register(SourcePage)
class SourcePageAdmin(SourceReadOnlyAdmin):
    study_path = "document__study"
    list_display = ["document", "number", "text_source", "rotation", "skew", "mean_confidence", "agent_version"]


@admin.register(SourceVerification)
class SourceVerificationAdmin(SourceReadOnlyAdmin):
    list_display = ["id", "subject", "visit", "item", "document", "verdict", "agent_verdict", "review", "verified_by"]
    list_filter = ["study", "verdict", "review", "method"]


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
