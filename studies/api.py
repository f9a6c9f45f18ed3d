"""API v1 for study data. Views parse, check access through the selectors, call one service and
serialize: an object outside the user's scope is not in the queryset, so it answers 404."""

import datetime

import django_filters
from django.core.exceptions import PermissionDenied
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from config.api import BIGINT_MAX, ApiView, DateTimeFilter, Deprecation, FilterSet, IntegerFilter, error_response
from studies import selectors, services
from studies.ingest.dispatch import import_upload
from studies.models import (
    DataPoint,
    FormDefinition,
    Import,
    ItemDefinition,
    Site,
    Study,
    Subject,
    SubjectVisit,
)

# --- Serializers -------------------------------------------------------------------------------


class StudySerializer(serializers.ModelSerializer):
    class Meta:
        model = Study
        fields = ["id", "protocol_id", "oid", "name", "sponsor", "phase", "status", "created_at"]


class SiteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Site
        fields = ["id", "study", "number", "name", "country", "city", "timezone", "language", "latitude", "longitude"]


class SubjectSerializer(serializers.ModelSerializer):
    site_number = serializers.CharField(source="site.number", read_only=True)

    class Meta:
        model = Subject
        fields = ["id", "study", "site", "site_number", "subject_id", "status", "consent_date", "enrolment_date"]


class SubjectVisitSerializer(serializers.ModelSerializer):
    subject_id = serializers.CharField(source="subject.subject_id", read_only=True)
    visit_oid = serializers.CharField(source="definition.oid", read_only=True)
    visit_name = serializers.CharField(source="definition.name", read_only=True)
    planned_day = serializers.IntegerField(source="definition.planned_day", read_only=True, allow_null=True,
                                           default=None)
    window_before = serializers.IntegerField(source="definition.window_before", read_only=True)
    window_after = serializers.IntegerField(source="definition.window_after", read_only=True)

    class Meta:
        model = SubjectVisit
        fields = ["id", "study", "subject", "subject_id", "definition", "visit_oid", "visit_name", "repeat_key",
                  "actual_date", "planned_day", "window_before", "window_after"]


class FormDefinitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = FormDefinition
        fields = ["id", "study", "oid", "name", "order", "repeating"]


class ItemDefinitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ItemDefinition
        fields = ["id", "study", "form", "oid", "label", "data_type", "units", "codelist", "range_low", "range_high",
                  "mandatory", "critical"]


class DataPointSerializer(serializers.ModelSerializer):
    subject_id = serializers.CharField(source="subject.subject_id", read_only=True)
    site_number = serializers.CharField(source="subject.site.number", read_only=True)
    visit_oid = serializers.CharField(source="visit.definition.oid", read_only=True)
    form_oid = serializers.CharField(source="form.oid", read_only=True)
    item_oid = serializers.CharField(source="item.oid", read_only=True)

    class Meta:
        model = DataPoint
        fields = ["id", "study", "subject", "subject_id", "site_number", "visit", "visit_oid", "form", "form_oid",
                  "item", "item_oid", "repeat_key", "raw_value", "value_number", "value_date", "entered_by",
                  "entered_at", "version", "sdv_state"]


class DataPointChangeSerializer(serializers.Serializer):
    raw_value = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=4000)
    reason = serializers.CharField(max_length=1000, help_text="Reason for change (21 CFR Part 11)")
    version = serializers.IntegerField(required=False, min_value=1, max_value=BIGINT_MAX, source="expected_version",
                                       help_text="The version the change is based on; refused with 409 "
                                                 "if the value has changed since")


class HistoryRowSerializer(serializers.Serializer):
    history_id = serializers.IntegerField()
    history_date = serializers.DateTimeField()
    history_type = serializers.SerializerMethodField()
    history_user = serializers.SerializerMethodField()
    reason = serializers.CharField(source="history_change_reason", allow_null=True)
    version = serializers.IntegerField()
    raw_value = serializers.CharField()
    sdv_state = serializers.CharField()

    _TYPES = {"+": "created", "~": "changed", "-": "deleted"}

    def get_history_type(self, row) -> str:
        return self._TYPES.get(row.history_type, row.history_type)

    def get_history_user(self, row) -> str | None:
        return row.history_user.username if row.history_user_id else None


class ImportSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True, allow_null=True)
    duration_seconds = serializers.FloatField(read_only=True)
    counts = serializers.SerializerMethodField()

    class Meta:
        model = Import
        fields = ["id", "study", "source", "filename", "file_sha256", "file_size", "full_snapshot", "status",
                  "progress", "counts", "errors", "created_by", "created_at", "started_at", "finished_at",
                  "duration_seconds"]

    def get_counts(self, record) -> dict:
        return {k: v for k, v in record.counts.items() if k != "stored_as"}


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="CDISC ODM XML, an HL7 v2 ORU message or FHIR R4 JSON")
    full_snapshot = serializers.BooleanField(default=False,
                                             help_text="Flag stored values the file no longer contains")


# --- Filters -----------------------------------------------------------------------------------


class SiteFilter(FilterSet):
    class Meta:
        model = Site
        fields = ["study", "country", "number"]


class SubjectFilter(FilterSet):
    class Meta:
        model = Subject
        fields = ["study", "site", "status", "subject_id"]


class SubjectVisitFilter(FilterSet):
    site = IntegerFilter(field_name="subject__site")
    visit_oid = django_filters.CharFilter(field_name="definition__oid")

    class Meta:
        model = SubjectVisit
        fields = ["study", "subject", "definition", "site", "visit_oid"]


class StudyScopedFilter(FilterSet):
    class Meta:
        fields = ["study", "oid"]


class FormFilter(StudyScopedFilter):
    class Meta(StudyScopedFilter.Meta):
        model = FormDefinition


class ItemFilter(StudyScopedFilter):
    class Meta:
        model = ItemDefinition
        fields = ["study", "oid", "form", "data_type", "critical"]


class DataPointFilter(FilterSet):
    site = IntegerFilter(field_name="subject__site")
    item_oid = django_filters.CharFilter(field_name="item__oid")
    form_oid = django_filters.CharFilter(field_name="form__oid")
    changed_since = DateTimeFilter(field_name="entered_at", lookup_expr="gte",
                                   help_text="Deprecated (sunset 2027-06-30): values entered at or after this "
                                             "date-time. Use updated_since, which also sees SDV and flag changes.")
    deprecated_filters = {"changed_since": Deprecation(since=datetime.date(2026, 12, 7),
                                                       sunset=datetime.date(2027, 6, 30), successor="updated_since")}

    class Meta:
        model = DataPoint
        fields = ["study", "site", "subject", "visit", "form", "item", "item_oid", "form_oid", "sdv_state",
                  "changed_since"]


# --- Views -------------------------------------------------------------------------------------


class StudyViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = StudySerializer
    filterset_fields = ["status", "protocol_id"]

    def get_queryset(self):
        return selectors.study_list(user=self.request.user)

    @extend_schema(request={"multipart/form-data": ImportUploadSerializer}, responses={202: ImportSerializer})
    @action(detail=True, methods=["post"], url_path="imports",
            parser_classes=[MultiPartParser, FormParser])
    def imports(self, request, pk=None):
        """Upload a file to import into this study; the import runs in the background. Poll
        `GET /api/v1/imports/{id}/` for its status, counts and errors."""
        study = self.get_object()
        if not selectors.study_user_can(user=request.user, capability="import_data", study=study):
            raise PermissionDenied("Only data managers and sponsors may import data.")
        upload = ImportUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        record = import_upload(study=study, actor=request.user, upload=upload.validated_data["file"],
                               full_snapshot=upload.validated_data["full_snapshot"])
        record.refresh_from_db()
        return Response(ImportSerializer(record).data, status=status.HTTP_202_ACCEPTED)


class ImportFilter(FilterSet):
    updated_since_fields = ("created_at", "started_at", "finished_at")

    class Meta:
        model = Import
        fields = ["study", "status", "source"]


class ImportViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = ImportSerializer
    filterset_class = ImportFilter

    def get_queryset(self):
        return selectors.import_list(user=self.request.user)


class SiteViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = SiteSerializer
    filterset_class = SiteFilter

    def get_queryset(self):
        return selectors.site_list(user=self.request.user).order_by("study_id", "number")


class SubjectViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = SubjectSerializer
    filterset_class = SubjectFilter

    def get_queryset(self):
        return selectors.subject_list(user=self.request.user)


class SubjectVisitViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = SubjectVisitSerializer
    filterset_class = SubjectVisitFilter

    def get_queryset(self):
        return selectors.subject_visit_list(user=self.request.user)


class FormDefinitionViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = FormDefinitionSerializer
    filterset_class = FormFilter

    def get_queryset(self):
        return selectors.form_definition_list(user=self.request.user)


class ItemDefinitionViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = ItemDefinitionSerializer
    filterset_class = ItemFilter

    def get_queryset(self):
        return selectors.item_definition_list(user=self.request.user)


class DataPointViewSet(ApiView, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = DataPointSerializer
    filterset_class = DataPointFilter
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        return selectors.data_point_list(user=self.request.user)

    @extend_schema(request=DataPointChangeSerializer, responses=DataPointSerializer, examples=[OpenApiExample(
        "A correction with its reason", request_only=True,
        value={"raw_value": "145", "reason": "Transcription error: the source says 145.", "version": 2})])
    def partial_update(self, request, *args, **kwargs):
        """Change a value: `raw_value` and a `reason` for change are required."""
        data_point = self.get_object()  # 404 outside the user's scope
        if not selectors.user_can(user=request.user, capability="enter_data", site=data_point.subject.site):
            raise PermissionDenied("Your role may not change data at this site.")
        change = DataPointChangeSerializer(data=request.data)
        change.is_valid(raise_exception=True)
        changes = change.validated_data
        if self.if_match_version is not None:  # If-Match matched: the service re-checks it under its lock
            changes.setdefault("expected_version", self.if_match_version)
        try:
            data_point = services.data_point_update(data_point=data_point, actor=request.user, **changes)
        except services.StaleVersion as error:
            return error_response(str(error), status_code=status.HTTP_409_CONFLICT,
                                  current_version=DataPoint.objects.get(pk=data_point.pk).version)
        return Response(DataPointSerializer(data_point).data)

    @extend_schema(responses=HistoryRowSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], filterset_class=None)
    def history(self, request, pk=None):
        """The audit trail of one data point: every version, who, when (UTC) and why."""
        data_point = self.get_object()
        rows = data_point.history.select_related("history_user").order_by("history_date", "history_id")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(HistoryRowSerializer(page, many=True).data)
