"""API v1 for queries (read for now; the lifecycle comes with the QueryTracker), edit checks and
the discrepancies the QueryAnalyzer finds."""

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.exceptions import ValidationError as ValidationError_
from rest_framework.response import Response

from agents.orchestrator import WorkflowCannotStart, workflow_start
from agents.services import WorkflowRunOverlap
from config.api import FilterSet, error_response
from queries.models import Discrepancy, EditCheck, Query, QueryMessage
from queries.selectors import discrepancy_list, edit_check_list, query_list, rule_statistics
from queries.services import edit_check_save
from studies.models import ItemDefinition, Study
from studies.selectors import study_list, study_user_can, study_user_can_at_a_site


class QueryMessageSerializer(serializers.ModelSerializer):
    author = serializers.SerializerMethodField()

    class Meta:
        model = QueryMessage
        fields = ["id", "kind", "author", "text", "created_at"]

    def get_author(self, message) -> str:
        return message.author.username if message.author_id else message.author_name


class QuerySerializer(serializers.ModelSerializer):
    site_number = serializers.CharField(source="site.number", read_only=True)
    subject_id = serializers.CharField(source="subject.subject_id", read_only=True)
    messages = QueryMessageSerializer(many=True, read_only=True)

    class Meta:
        model = Query
        fields = ["id", "study", "site", "site_number", "subject", "subject_id", "data_point", "origin", "rule_code",
                  "category", "severity", "state", "recipient", "text", "due_date", "created_at", "answered_at",
                  "closed_at", "messages"]


class QueryFilter(FilterSet):
    class Meta:
        model = Query
        fields = ["study", "site", "subject", "data_point", "state", "category", "severity", "recipient", "origin"]


class QueryViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = QuerySerializer
    filterset_class = QueryFilter

    def get_queryset(self):
        return query_list(user=self.request.user).prefetch_related("messages__author")


class EditCheckSerializer(serializers.ModelSerializer):
    item = serializers.SlugRelatedField(slug_field="oid", read_only=True)

    class Meta:
        model = EditCheck
        fields = ["id", "study", "code", "name", "rule_type", "item", "params", "severity", "active", "version",
                  "source", "created_at", "updated_at"]


class EditCheckWriteSerializer(serializers.Serializer):
    """A new rule (study, code, name, rule_type required) or a change to one; `item` is the item's
    OID; `reason` is required (audit trail)."""

    study = serializers.IntegerField(required=False)
    code = serializers.CharField(max_length=160, required=False)
    name = serializers.CharField(max_length=255, required=False)
    rule_type = serializers.ChoiceField(choices=EditCheck.RuleType.choices, required=False)
    item = serializers.CharField(max_length=128, required=False, allow_null=True)
    params = serializers.JSONField(required=False)
    severity = serializers.ChoiceField(choices=[("", ""), *Query.Severity.choices], required=False)
    active = serializers.BooleanField(required=False)
    reason = serializers.CharField(max_length=1000)


class EditCheckFilter(FilterSet):
    class Meta:
        model = EditCheck
        fields = ["study", "rule_type", "source", "active"]


class EditCheckViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Edit checks: listed for the study team; written (versioned, audited, with a reason) by data
    managers and sponsors. An invalid rule is refused with the reason in `extra`."""

    serializer_class = EditCheckSerializer
    filterset_class = EditCheckFilter
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return edit_check_list(user=self.request.user)

    def _save(self, check: EditCheck, data: dict, *, created: bool) -> Response:
        if not study_user_can(user=self.request.user, capability="manage_edit_checks", study=check.study):
            raise PermissionDenied("Your role may not change this study's edit checks.")
        for field in ("code", "name", "rule_type", "params", "severity", "active"):
            if field in data:
                setattr(check, field, data[field])
        if "item" in data:
            check.item = None
            if data["item"]:
                check.item = ItemDefinition.objects.filter(study=check.study, oid=data["item"]).first()
                if check.item is None:
                    return error_response(f"No item {data['item']!r} in this study.", item=[data["item"]])
        try:
            check = edit_check_save(check=check, actor=self.request.user, reason=data["reason"])
        except ValidationError as error:
            return error_response("The edit check is not valid.", **error.message_dict)
        return Response(EditCheckSerializer(check).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=EditCheckWriteSerializer, responses=EditCheckSerializer)
    def create(self, request, *args, **kwargs):
        data = _valid(EditCheckWriteSerializer, request.data)
        missing = [f for f in ("study", "code", "name", "rule_type") if f not in data]
        if missing:
            return error_response("Missing fields.", **{f: ["This field is required."] for f in missing})
        study = study_list(user=request.user).filter(pk=data["study"]).first()
        if study is None:
            raise NotFound("No such study.")
        return self._save(EditCheck(study=study, source=EditCheck.Source.MANUAL), data, created=True)

    @extend_schema(request=EditCheckWriteSerializer, responses=EditCheckSerializer)
    def partial_update(self, request, *args, **kwargs):
        check = self.get_object()
        data = _valid(EditCheckWriteSerializer, request.data)
        data.pop("study", None)
        return self._save(check, data, created=False)

    @extend_schema(parameters=[OpenApiParameter("study", int, required=True)], filters=False)
    @action(detail=False, methods=["get"], filterset_class=None, pagination_class=None)
    def statistics(self, request):
        """Per site and rule, from the study's query history (imported queries included): queries,
        query rate per subject, confirmation rate, median days to answer."""
        study = _study_param(request)
        return Response(rule_statistics(user=request.user, study=study))


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _study_param(request) -> Study:
    try:
        study_id = int(request.query_params.get("study", ""))
    except ValueError:
        raise ValidationError_({"study": ["A study id is required."]}) from None
    study = study_list(user=request.user).filter(pk=study_id).first()
    if study is None or not study_user_can_at_a_site(user=request.user, capability="review_discrepancies",
                                                     study=study):
        raise NotFound("No such study.")
    return study


class DiscrepancySerializer(serializers.ModelSerializer):
    subject = serializers.CharField(source="subject.subject_id")
    site = serializers.CharField(source="site.number")
    visit = serializers.SerializerMethodField()
    item = serializers.SerializerMethodField()
    value = serializers.CharField(source="observed")
    rule = serializers.CharField(source="edit_check.code")
    held_back = serializers.SerializerMethodField()

    class Meta:
        model = Discrepancy
        fields = ["id", "study", "subject", "site", "visit", "item", "value", "expected", "rule", "check_version",
                  "rule_type", "severity", "category", "confidence", "held_back", "disposition", "status", "query",
                  "data_point", "params", "found_at", "changed_at", "resolved_at"]

    def get_visit(self, row) -> str | None:
        return row.visit.definition.oid if row.visit_id else None

    def get_item(self, row) -> str | None:
        return row.item.oid if row.item_id else None

    def get_held_back(self, row) -> bool:
        return row.disposition == Discrepancy.Disposition.HELD_BACK


class DiscrepancyFilter(FilterSet):
    site = django_filters.CharFilter(field_name="site__number", help_text="site number")
    subject = django_filters.CharFilter(field_name="subject__subject_id", help_text="the subject's id in the EDC")
    rule = django_filters.CharFilter(field_name="edit_check__code")
    held_back = django_filters.BooleanFilter(method="_held_back")
    min_confidence = django_filters.NumberFilter(field_name="confidence", lookup_expr="gte")
    max_confidence = django_filters.NumberFilter(field_name="confidence", lookup_expr="lte")

    class Meta:
        model = Discrepancy
        fields = ["study", "site", "subject", "rule", "rule_type", "severity", "category", "status", "disposition",
                  "held_back"]

    def _held_back(self, queryset, name, value):
        held = Q(disposition=Discrepancy.Disposition.HELD_BACK)
        return queryset.filter(held) if value else queryset.exclude(held)


class DiscrepancyViewSet(viewsets.ReadOnlyModelViewSet):
    """What the QueryAnalyzer found: to the site as queries, held back for review, or for medical
    review. `POST run/?study=ID` starts the data_review workflow (data managers, sponsors)."""

    serializer_class = DiscrepancySerializer
    filterset_class = DiscrepancyFilter

    def get_queryset(self):
        return discrepancy_list(user=self.request.user)

    @extend_schema(request=None, parameters=[OpenApiParameter("study", int, required=True)], filters=False)
    @action(detail=False, methods=["post"], filterset_class=None)
    def run(self, request):
        study = _study_param(request)
        if not study_user_can(user=request.user, capability="run_workflow", study=study):
            raise PermissionDenied("Your role may not run the QueryAnalyzer on this study.")
        try:
            run = workflow_start(name="data_review", study_id=study.pk, actor=request.user)
        except WorkflowRunOverlap as error:
            return error_response(str(error), status_code=status.HTTP_409_CONFLICT)
        except WorkflowCannotStart as error:  # e.g. the QueryAnalyzer is paused on the study
            return error_response(str(error), status_code=status.HTTP_409_CONFLICT)
        return Response({"run": run.pk, "status": run.status}, status=status.HTTP_202_ACCEPTED)
