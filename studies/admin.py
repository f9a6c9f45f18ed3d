"""Django admin for sponsors: studies, sites, memberships and item metadata, with history.

Every change made here asks for a reason for change, stored in the history row with the user
(21 CFR Part 11). A sponsor who is staff sees only the studies they sponsor."""

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import ValidationError
from django.http import Http404
from guardian.admin import GuardedModelAdminMixin
from simple_history.admin import SimpleHistoryAdmin

from studies.models import (
    DataPoint,
    FormDefinition,
    ItemDefinition,
    Role,
    Site,
    Study,
    StudyMembership,
    Subject,
    SubjectVisit,
    VisitDefinition,
)


def sponsored_study_ids(user):
    return StudyMembership.objects.filter(user=user, role=Role.SPONSOR, is_active=True).values("study_id")


class ReasonForm(forms.ModelForm):
    reason_for_change = forms.CharField(
        max_length=1000, required=False, widget=forms.TextInput(attrs={"size": 80}),
        help_text="Required when changing an existing record (audit trail).",
    )

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk and not (cleaned.get("reason_for_change") or "").strip():
            self.add_error("reason_for_change", "A reason for change is required.")
        return cleaned


class AuditedAdmin(SimpleHistoryAdmin):
    """History view plus a mandatory reason on change; scoped to the sponsor's studies.

    Regulated records are never deleted here (a delete in admin would carry no reason); they are
    closed, cancelled or flagged through their own services."""

    form = ReasonForm
    study_path = "study"

    def save_model(self, request, obj, form, change):
        obj._change_reason = (form.cleaned_data.get("reason_for_change") or "").strip() or "Created in admin"
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request, obj=None):
        return False

    def get_list_filter(self, request):
        # An unscoped related filter would list every study's name: offer only those in scope.
        return [(name, admin.RelatedOnlyFieldListFilter) if name == "study" else name
                for name in super().get_list_filter(request)]

    def _check_in_scope(self, request, object_id):
        # simple-history falls back to the latest history row when the object is outside
        # get_queryset(), which would show another sponsor's records: refuse first.
        if not self.get_queryset(request).filter(pk=object_id).exists():
            raise Http404("No such record.")

    def history_view(self, request, object_id, extra_context=None):
        self._check_in_scope(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        self._check_in_scope(request, object_id)
        return super().history_form_view(request, object_id, version_id, extra_context)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self.study_path}__in": sponsored_study_ids(request.user)})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not request.user.is_superuser and db_field.related_model is Study:
            kwargs["queryset"] = Study.objects.filter(id__in=sponsored_study_ids(request.user))
        elif not request.user.is_superuser and hasattr(db_field.related_model, "study"):
            kwargs["queryset"] = db_field.related_model.objects.filter(
                study_id__in=sponsored_study_ids(request.user)
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Study)
class StudyAdmin(AuditedAdmin):
    list_display = ["protocol_id", "name", "sponsor", "phase", "status"]
    search_fields = ["protocol_id", "name", "oid"]
    list_filter = ["status", "phase"]
    study_path = "pk"

    def get_queryset(self, request):
        queryset = SimpleHistoryAdmin.get_queryset(self, request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(pk__in=sponsored_study_ids(request.user))


@admin.register(Site)
class SiteAdmin(GuardedModelAdminMixin, AuditedAdmin):
    list_display = ["number", "name", "study", "country", "city", "timezone", "language"]
    list_filter = ["study", "country"]
    search_fields = ["number", "name", "city"]


class MembershipForm(forms.ModelForm):
    class Meta:
        model = StudyMembership
        fields = ["user", "study", "role", "site", "is_active"]

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request

    def clean(self):
        cleaned = super().clean()
        user = self.request.user
        if user.is_superuser:
            return cleaned
        study = cleaned.get("study")
        if study is not None and not Study.objects.filter(pk=study.pk, id__in=sponsored_study_ids(user)).exists():
            raise ValidationError("You can manage memberships of the studies you sponsor only.")
        if cleaned.get("user") == user or (self.instance.pk and self.instance.user_id == user.pk):
            # Nobody grants or widens their own access (segregation of duties).
            raise ValidationError("You cannot change your own memberships; ask another sponsor or an administrator.")
        return cleaned


@admin.register(StudyMembership)
class StudyMembershipAdmin(admin.ModelAdmin):
    """Access-control changes are audited by django-auditlog (see studies/signals.py)."""

    form = MembershipForm
    list_display = ["user", "study", "role", "site", "is_active", "created_at"]
    list_filter = [("study", admin.RelatedOnlyFieldListFilter), "role", "is_active"]
    search_fields = ["user__username", "study__protocol_id"]
    autocomplete_fields = ["user"]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class ScopedForm(form):
            def __init__(self, *args, **inner):
                super().__init__(*args, request=request, **inner)

        return ScopedForm

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("user", "study", "site")
        if request.user.is_superuser:
            return queryset
        return queryset.filter(study__in=sponsored_study_ids(request.user))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not request.user.is_superuser and db_field.name == "study":
            kwargs["queryset"] = Study.objects.filter(id__in=sponsored_study_ids(request.user))
        elif not request.user.is_superuser and db_field.name == "site":
            kwargs["queryset"] = Site.objects.filter(study_id__in=sponsored_study_ids(request.user))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Subject)
class SubjectAdmin(AuditedAdmin):
    list_display = ["subject_id", "study", "site", "status", "consent_date", "enrolment_date"]
    list_filter = ["study", "status"]
    search_fields = ["subject_id"]


@admin.register(VisitDefinition)
class VisitDefinitionAdmin(AuditedAdmin):
    list_display = ["oid", "name", "study", "order", "planned_day", "window_before", "window_after"]
    list_filter = ["study"]


@admin.register(SubjectVisit)
class SubjectVisitAdmin(AuditedAdmin):
    list_display = ["subject", "definition", "repeat_key", "actual_date"]
    list_filter = ["study"]
    search_fields = ["subject__subject_id"]


@admin.register(FormDefinition)
class FormDefinitionAdmin(AuditedAdmin):
    list_display = ["oid", "name", "study", "order", "repeating"]
    list_filter = ["study"]


@admin.register(ItemDefinition)
class ItemDefinitionAdmin(AuditedAdmin):
    list_display = ["oid", "label", "study", "form", "data_type", "units", "range_low", "range_high", "mandatory",
                    "critical"]
    list_filter = ["study", "data_type", "critical", "mandatory"]
    search_fields = ["oid", "label"]


@admin.register(DataPoint)
class DataPointAdmin(AuditedAdmin):
    """Read-only: clinical values are entered at the site (UI/API, with a reason) or synced from the
    EDC, never typed into admin. The history view shows every version."""

    list_display = ["subject", "visit", "item", "repeat_key", "raw_value", "version", "sdv_state"]
    list_filter = ["study", "sdv_state"]
    search_fields = ["subject__subject_id", "item__oid"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class UserAdmin(DjangoUserAdmin):
    """Accounts are deactivated (Active unticked), never deleted: the audit trail names who made
    each change, and the database refuses to delete a user named in the data point history
    (studies/integrity.py)."""

    def has_delete_permission(self, request, obj=None):
        return False


User = get_user_model()
admin.site.unregister(User)
admin.site.register(User, UserAdmin)
