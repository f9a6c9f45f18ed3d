from django.contrib import admin

from queries.models import Query, QueryMessage
from studies.admin import AuditedAdmin


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
