"""API v1 for risk-based monitoring: KRI results per snapshot (with their trend), snapshots (with
problems and quality tolerance limits), site risk, KRI definitions (changed with a reason by
sponsors and data managers), the study's risk configuration and SDV plans. Read through the
scoped selectors: an out-of-scope row is simply not there (404)."""

import django_filters
from django.db.models import OuterRef, Subquery
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import ApiView, FilterSet, IntegerFilter
from sdv import selectors
from sdv.models import KriDefinition, KriResult, KriSnapshot, RiskConfig, SdvPlan, SiteRiskAssessment
from sdv.services import EDITABLE, kri_definition_update, risk_config_get, risk_config_set
from studies.models import DataPoint
from studies.selectors import study_list


def _latest_snapshot(queryset):
    """The rows of each study's latest snapshot (when no snapshot is asked for): without `study=`,
    a study whose last snapshot is older than another's still answers."""
    latest = KriSnapshot.objects.filter(study=OuterRef("snapshot__study")).order_by("-snapshot_date").values("pk")[:1]
    return queryset.filter(snapshot=Subquery(latest))


class KriResultSerializer(serializers.ModelSerializer):
    kri = serializers.CharField(source="kri_id")
    snapshot = serializers.DateField(source="snapshot.snapshot_date")
    study = serializers.IntegerField(source="snapshot.study_id")

    class Meta:
        model = KriResult
        fields = ["id", "study", "snapshot", "kri", "definition_version", "level", "group", "site", "numerator",
                  "denominator", "metric", "score", "flag", "weight", "overall", "factor", "previous_flag",
                  "flag_changed", "consecutive_flagged"]


class KriResultFilter(FilterSet):
    study = IntegerFilter(field_name="snapshot__study")
    kri = django_filters.CharFilter(method="filter_kri", help_text="kri0001; with level=country also its country "
                                                                   "twin cou0001 (and the reverse)")
    snapshot = django_filters.DateFilter(method="filter_snapshot")
    level = django_filters.ChoiceFilter(choices=KriDefinition.Level.choices)
    changed = django_filters.BooleanFilter(field_name="flag_changed", help_text="flag changed since the previous "
                                                                                "snapshot")
    consecutive_min = IntegerFilter(field_name="consecutive_flagged", lookup_expr="gte",
                                                  help_text="flagged in at least this many snapshots in a row")
    history = django_filters.BooleanFilter(method="filter_history", help_text="every snapshot, oldest first (a "
                                                                              "site's KRI history)")
    updated_since_fields = ("snapshot__computed_at",)

    class Meta:
        model = KriResult
        fields = ["study", "kri", "snapshot", "level", "site", "flag"]

    def filter_snapshot(self, queryset, name, value):
        return queryset.filter(snapshot__snapshot_date=value)

    def filter_kri(self, queryset, name, value):
        # gsm numbers a KRI's site and country versions alike (kri0001, cou0001): asked for one KRI
        # at the other level, the twin answers.
        twins = {KriDefinition.Level.SITE: "kri", KriDefinition.Level.COUNTRY: "cou"}
        level = self.form.cleaned_data.get("level")
        ids = {value}
        if level in twins and value[:3] in twins.values() and value[3:].isdigit():
            ids.add(twins[level] + value[3:])
        return queryset.filter(kri_id__in=ids)

    def filter_history(self, queryset, name, value):
        return queryset.order_by("kri_id", "level", "group", "snapshot__snapshot_date") if value else queryset

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        if self.form.cleaned_data.get("history"):
            return queryset
        return queryset if self.form.cleaned_data.get("snapshot") else _latest_snapshot(queryset)


class KriResultViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """KRI results per group (site number, country or study): `?study=ID&kri=kri0001[&snapshot=
    YYYY-MM-DD][&level=site|country|study]`; the latest snapshot when none is given, every snapshot
    with `history=true`. `flag` is null where masked; `changed=true` lists flags changed since the
    previous snapshot, `consecutive_min=N` those flagged N snapshots in a row."""

    serializer_class = KriResultSerializer
    filterset_class = KriResultFilter

    def get_queryset(self):
        return selectors.kri_result_list(user=self.request.user).order_by("kri_id", "level", "group")


class SiteRiskSerializer(serializers.ModelSerializer):
    site_number = serializers.CharField(source="site.number")
    snapshot = serializers.DateField(source="snapshot.snapshot_date")
    study = serializers.IntegerField(source="snapshot.study_id")

    class Meta:
        model = SiteRiskAssessment
        fields = ["id", "study", "snapshot", "site", "site_number", "risk_score", "tier", "previous_tier", "flagged",
                  "explanation"]


class SiteRiskFilter(FilterSet):
    study = IntegerFilter(field_name="snapshot__study")
    snapshot = django_filters.DateFilter(field_name="snapshot__snapshot_date")

    class Meta:
        model = SiteRiskAssessment
        fields = ["study", "snapshot", "site", "tier"]

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        return queryset if self.form.cleaned_data.get("snapshot") else _latest_snapshot(queryset)


class SiteRiskViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """Each site's risk score, tier and explanation (`?study=ID`; latest snapshot unless `snapshot=`)."""

    serializer_class = SiteRiskSerializer
    filterset_class = SiteRiskFilter

    def get_queryset(self):
        return selectors.site_risk_list(user=self.request.user).order_by("-risk_score", "site__number")


class KriDefinitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = KriDefinition
        fields = ["id", "study", "kri_id", "level", "abbreviation", "name", "numerator_label", "denominator_label",
                  "numerator", "denominator", "population", "analysis", "score_of", "thresholds", "flags", "weights",
                  "accrual_threshold", "accrual_metric", "active", "version"]


class KriDefinitionWriteSerializer(serializers.Serializer):
    """A change to a KRI definition: any of the editable fields, and the reason (audit trail)."""

    name = serializers.CharField(max_length=128, required=False)
    numerator_label = serializers.CharField(max_length=128, required=False)
    denominator_label = serializers.CharField(max_length=128, required=False)
    numerator = serializers.JSONField(required=False)
    denominator = serializers.JSONField(required=False)
    population = serializers.CharField(max_length=16, required=False)
    analysis = serializers.ChoiceField(choices=KriDefinition.Analysis.choices, required=False)
    score_of = serializers.CharField(max_length=16, required=False)
    thresholds = serializers.JSONField(required=False)
    flags = serializers.JSONField(required=False)
    weights = serializers.JSONField(required=False)
    accrual_threshold = serializers.FloatField(required=False, allow_null=True)
    accrual_metric = serializers.ChoiceField(choices=[("", ""), *KriDefinition.AccrualMetric.choices], required=False)
    active = serializers.BooleanField(required=False)
    reason = serializers.CharField(max_length=1000)


class KriDefinitionViewSet(ApiView, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """The study's KRI definitions; sponsors and data managers change one with PATCH and a
    `reason` (a new version, audited). A definition the engine could not read is refused with why."""

    serializer_class = KriDefinitionSerializer
    filterset_fields = ["study", "kri_id", "level", "active"]
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        return selectors.kri_definition_list(user=self.request.user)

    @extend_schema(request=KriDefinitionWriteSerializer, responses=KriDefinitionSerializer)
    def partial_update(self, request, *args, **kwargs):
        definition = self.get_object()
        if not selectors.risk_writable(user=request.user, study=definition.study):
            raise PermissionDenied("Your role may not change this study's KRI definitions.")
        data = _valid(KriDefinitionWriteSerializer, request.data)
        changes = {k: v for k, v in data.items() if k in EDITABLE}
        definition = kri_definition_update(definition=definition, actor=request.user, reason=data["reason"], **changes)
        return Response(KriDefinitionSerializer(definition).data)


class KriSnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = KriSnapshot
        fields = ["id", "study", "snapshot_date", "computed_at", "seconds", "problems", "qtl"]


class KriSnapshotFilter(FilterSet):
    updated_since_fields = ("computed_at",)

    class Meta:
        model = KriSnapshot
        fields = ["study", "snapshot_date"]


class KriSnapshotViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """The study's KRI snapshots, newest first: KRIs that could not be computed and why, and the
    quality tolerance limit checks (estimate, exact 95% interval, limit, status)."""

    serializer_class = KriSnapshotSerializer
    filterset_class = KriSnapshotFilter

    def get_queryset(self):
        return selectors.kri_snapshot_list(user=self.request.user).order_by("-snapshot_date")


class RiskConfigSerializer(serializers.ModelSerializer):
    class Meta:
        model = RiskConfig
        fields = ["study", "medium_from", "high_from", "sdv_share", "first_subjects_fully", "qtls", "critical_rules",
                  "version"]


class RiskConfigWriteSerializer(serializers.Serializer):
    medium_from = serializers.FloatField(required=False)
    high_from = serializers.FloatField(required=False)
    sdv_share = serializers.JSONField(required=False)
    first_subjects_fully = serializers.IntegerField(required=False, min_value=0, max_value=100_000)
    qtls = serializers.JSONField(required=False)
    critical_rules = serializers.JSONField(required=False)
    reason = serializers.CharField(max_length=1000)


class RiskConfigView(ApiView, APIView):
    etag_methods = ("get", "patch")
    """`GET /api/v1/risk-config/?study=ID`: the study's tier cut-offs, SDV shares, first-N subjects,
    quality tolerance limits and critical-data rules (the defaults until set). `PATCH` with a
    `reason` (sponsors and data managers) changes them, audited and versioned."""

    def _study(self, request):
        try:
            study = study_list(user=request.user).filter(pk=int(request.query_params.get("study", ""))).first()
        except ValueError:
            raise ApiValidationError({"study": ["A study id is required."]}) from None
        if study is None or not selectors.risk_readable(user=request.user, study=study):
            raise NotFound("No such study.")
        return study

    @extend_schema(parameters=[OpenApiParameter("study", int, required=True)], responses=RiskConfigSerializer)
    def get(self, request):
        return Response(RiskConfigSerializer(risk_config_get(study=self._study(request))).data)

    @extend_schema(parameters=[OpenApiParameter("study", int, required=True)], request=RiskConfigWriteSerializer,
                   responses=RiskConfigSerializer)
    def patch(self, request):
        study = self._study(request)
        if not selectors.risk_writable(user=request.user, study=study):
            raise PermissionDenied("Your role may not change this study's risk configuration.")
        data = _valid(RiskConfigWriteSerializer, request.data)
        reason = data.pop("reason")
        return Response(RiskConfigSerializer(risk_config_set(study=study, actor=request.user, reason=reason,
                                                             **data)).data)


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class SdvProgressSerializer(serializers.Serializer):
    planned = serializers.IntegerField()
    verified = serializers.IntegerField()
    discrepancy = serializers.IntegerField()
    percent = serializers.IntegerField(allow_null=True)


class SdvPlanSerializer(serializers.ModelSerializer):
    site_number = serializers.CharField(source="site.number")
    progress = serializers.SerializerMethodField(help_text="Values verified at source of those planned")

    class Meta:
        model = SdvPlan
        fields = ["id", "site", "site_number", "tier", "share", "first_subjects", "counts", "reason", "updated_at",
                  "progress"]

    @extend_schema_field(SdvProgressSerializer)
    def get_progress(self, plan) -> dict:
        from sdv.verification.selectors import progress_totals, sdv_progress  # noqa: PLC0415

        return progress_totals(sdv_progress(DataPoint.objects.filter(subject__site_id=plan.site_id),
                                            by=["subject__site"]))


class SdvPlanFilter(FilterSet):
    study = IntegerFilter(field_name="site__study")

    class Meta:
        model = SdvPlan
        fields = ["study", "site", "tier"]


class SdvPlanViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = SdvPlanSerializer
    filterset_class = SdvPlanFilter

    def get_queryset(self):
        return selectors.sdv_plan_list(user=self.request.user).order_by("site__number")
