from django.contrib import admin

from queries.models import Discrepancy, EditCheck, Query, QueryMessage
from queries.services import edit_check_save
from studies.admin import AuditedAdmin, sponsored_study_ids


class QueryMessageInline(admin.TabularInline):
    model = QueryMessage
    extra = 0
    readonly_fields = ["kind", "author", "author_name", "text", "created_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Query)
class QueryAdmin(AuditedAdmin):
    """Read-only in admin: queries move through their lifecycle in the UI and API."""

    list_display = ["id", "study", "site", "subject", "category", "severity", "state", "recipient", "created_at"]
    list_filter = ["study", "state", "category", "severity", "recipient"]
    search_fields = ["subject__subject_id", "text", "rule_code"]
    inlines = [QueryMessageInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(EditCheck)
class EditCheckAdmin(AuditedAdmin):
    """Sponsors and data managers write study-specific rules here; every change asks for a reason
    and makes a new version (queries.services.edit_check_save)."""

    list_display = ["code", "study", "rule_type", "item", "version", "source", "active"]
    list_filter = ["study", "rule_type", "source", "active"]
    search_fields = ["code", "name", "item__oid"]
    readonly_fields = ["version", "source", "created_at", "updated_at"]
    raw_id_fields = ["item"]

    def save_model(self, request, obj, form, change):
        reason = (form.cleaned_data.get("reason_for_change") or "").strip() or "Created in admin"
        edit_check_save(check=obj, actor=request.user, reason=reason)


@admin.register(Discrepancy)
class DiscrepancyAdmin(admin.ModelAdmin):
    """Read-only: the analyzer's findings, recomputed by each pass."""

    list_display = ["id", "study", "site", "subject", "edit_check", "severity", "confidence", "disposition", "status"]
    list_filter = ["study", "rule_type", "severity", "disposition", "status"]
    raw_id_fields = ["subject", "visit", "item", "data_point", "query", "edit_check"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(study__in=sponsored_study_ids(request.user))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
