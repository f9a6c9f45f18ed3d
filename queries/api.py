"""API v1 for queries (their lifecycle: queries.lifecycle), edit checks and the discrepancies
the QueryAnalyzer finds."""

import datetime

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.exceptions import ValidationError as ValidationError_
from rest_framework.response import Response

from agents.orchestrator import WorkflowCannotStart, workflow_start
from agents.services import WorkflowRunOverlap
from config.api import ApiView, Deprecation, FilterSet, IdField, error_response
from queries.lifecycle import (
    BULK_ACTIONS,
    TRANSITIONS,
    TransitionRefused,
    queries_bulk,
    queries_bulk_each,
    query_answer,
    query_cancel,
    query_close,
    query_create,
    query_discard,
    query_edit,
    query_reassign,
    query_release,
    query_requery,
    query_transition_allowed,
)
from queries.models import Discrepancy, EditCheck, Notification, Query, QueryMessage
from queries.selectors import discrepancy_list, edit_check_list, query_list, rule_statistics, study_for_review
from queries.services import edit_check_save
from studies.models import ItemDefinition, Study
from studies.selectors import data_point_list, study_list, study_user_can, subject_list


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
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True, allow_null=True)
    messages = QueryMessageSerializer(many=True, read_only=True)

    class Meta:
        model = Query
        fields = ["id", "study", "site", "site_number", "subject", "subject_id", "data_point", "origin", "rule_code",
                  "category", "severity", "state", "recipient", "text", "language", "text_origin", "prompt_version",
                  "due_date", "escalation", "resolution", "created_by", "created_at", "released_at", "answered_at",
                  "closed_at", "cancelled_at", "messages"]


class QueryHistoryRowSerializer(serializers.Serializer):
    """One audit row: who, when (UTC), what changed (field, old, new) and why."""

    history_id = serializers.IntegerField()
    history_date = serializers.DateTimeField()
    history_type = serializers.CharField()
    history_user = serializers.CharField(allow_null=True)
    reason = serializers.CharField(allow_null=True)
    state = serializers.CharField()
    changes = serializers.ListField(child=serializers.DictField())


def query_history_rows(query: Query) -> list[dict]:
    rows = list(query.history.select_related("history_user").order_by("history_date", "history_id"))
    out, previous = [], None
    for row in rows:
        changes = [] if previous is None else [
            {"field": c.field, "old": c.old, "new": c.new} for c in row.diff_against(previous).changes]
        out.append({"history_id": row.history_id, "history_date": row.history_date,
                    "history_type": {"+": "created", "~": "changed", "-": "deleted"}.get(row.history_type),
                    "history_user": row.history_user.username if row.history_user_id else None,
                    "reason": row.history_change_reason, "state": row.state, "changes": changes})
        previous = row
    return out


class QueryDetailSerializer(QuerySerializer):
    history = serializers.SerializerMethodField()
    transitions = serializers.SerializerMethodField(help_text="What the requesting user may do with it now")

    class Meta(QuerySerializer.Meta):
        fields = [*QuerySerializer.Meta.fields, "history", "transitions"]

    @extend_schema_field(QueryHistoryRowSerializer(many=True))
    def get_history(self, query) -> list[dict]:
        return QueryHistoryRowSerializer(query_history_rows(query), many=True).data

    def get_transitions(self, query) -> list[str]:
        user = self.context["request"].user
        return [t for t in TRANSITIONS if query_transition_allowed(user=user, query=query, transition=t)]


class QueryFilter(FilterSet):
    class Meta:
        model = Query
        fields = ["study", "site", "subject", "data_point", "state", "category", "severity", "recipient", "origin"]


class QueryCreateSerializer(serializers.Serializer):
    """A manual query on a data point (or, for a missing value or a visit, on a subject)."""

    data_point = IdField(required=False)
    subject = IdField(required=False, help_text="Only for a query without a data point")
    text = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    recipient_role = serializers.ChoiceField(choices=Query.Recipient.choices, default=Query.Recipient.SITE,
                                             help_text="The marking group: who must answer")
    category = serializers.ChoiceField(choices=Query.Category.choices, default=Query.Category.OTHER)
    severity = serializers.ChoiceField(choices=Query.Severity.choices, default=Query.Severity.MINOR)
    language = serializers.CharField(max_length=8, required=False, default="",
                                     help_text="ISO 639-1; default the site's language")


class QueryTransitionSerializer(serializers.Serializer):
    """`text` for answer, re-query and edit; `reason` for close, cancel, discard, edit, reassign
    (optional on release); `resolution` for close; `recipient_role` for reassign. A missing text or
    reason is refused by the lifecycle, with the reason in `extra.reasons`."""

    text = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
    resolution = serializers.ChoiceField(choices=Query.Resolution.choices, default=Query.Resolution.OTHER)
    recipient_role = serializers.ChoiceField(choices=Query.Recipient.choices, required=False)


class QueryBulkSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=list(BULK_ACTIONS))
    ids = serializers.ListField(child=IdField(), min_length=1, max_length=1000)
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
    resolution = serializers.ChoiceField(choices=Query.Resolution.choices, required=False, help_text="close only")
    recipient_role = serializers.ChoiceField(choices=Query.Recipient.choices, required=False,
                                             help_text="reassign only")


class QueryBulkActionSerializer(QueryBulkSerializer):
    atomic = serializers.BooleanField(default=False, help_text="true: all or nothing (one refused row refuses "
                                                               "the batch); false: each row on its own")


class QueryBulkItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["applied", "refused", "not_found", "not_applied"],
                                     help_text="not_applied: an atomic batch refused because of another row")
    code = serializers.IntegerField(help_text="The status this row alone would answer: 200, 400, 403, 404 or 409")
    message = serializers.CharField(allow_blank=True)
    reasons = serializers.ListField(child=serializers.CharField())
    query = QuerySerializer(allow_null=True, help_text="The query as it is now (null when not found)")


class QueryBulkResultSerializer(serializers.Serializer):
    action = serializers.CharField()
    atomic = serializers.BooleanField()
    applied = serializers.IntegerField()
    refused = serializers.IntegerField(help_text="Rows refused, not found or not applied")
    results = QueryBulkItemSerializer(many=True)


TRANSITION_RESPONSES = {
    200: QueryDetailSerializer,
    204: OpenApiResponse(description="Done, and the query is now outside the caller's scope (nothing to show)"),
}

BULK_DEPRECATION = Deprecation(since=datetime.date(2026, 12, 7), sunset=datetime.date(2027, 6, 30),
                               successor="/api/v1/queries/bulk-actions/")


def _refused(error: TransitionRefused) -> Response:
    extra = {"reasons": error.reasons}
    if error.query_id is not None:
        extra["query"] = error.query_id
    return error_response(error.reason, status_code=error.status, **extra)


class QueryViewSet(ApiView, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Queries in the user's scope (another site's query answers 404; candidates only for data
    managers, sponsors and auditors). `POST` raises a manual query; `POST {id}/{transition}/`
    moves one through its lifecycle (queries.lifecycle: roles and states); `POST bulk/` does one
    action with one reason on many, all or nothing. A refused text or transition answers 400 or
    403 with the reasons in `extra.reasons` and changes nothing."""

    filterset_class = QueryFilter
    deprecations = {"bulk": BULK_DEPRECATION}

    def get_queryset(self):
        return query_list(user=self.request.user).select_related("created_by").prefetch_related("messages__author")

    def get_serializer_class(self):
        return QuerySerializer if self.action == "list" else QueryDetailSerializer

    def _detail(self, query: Query, *, status_code: int = status.HTTP_200_OK) -> Response:
        query = self.get_queryset().filter(pk=query.pk).first()
        if query is None:  # out of the caller's scope after the transition: nothing to show
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(QueryDetailSerializer(query, context=self.get_serializer_context()).data, status=status_code)

    def _target(self, data: dict):
        user = self.request.user
        if data.get("data_point") is not None:
            data_point = data_point_list(user=user).filter(pk=data["data_point"]).first()
            if data_point is None:
                raise ValidationError_({"data_point": ["No such data point."]})
            if data.get("subject") not in (None, data_point.subject_id):
                raise ValidationError_({"subject": ["The data point belongs to another subject."]})
            return data_point.subject, data_point
        if data.get("subject") is None:
            raise ValidationError_({"data_point": ["A data point (or a subject) is required."]})
        subject = subject_list(user=user).filter(pk=data["subject"]).first()
        if subject is None:
            raise ValidationError_({"subject": ["No such subject."]})
        return subject, None

    @extend_schema(request=QueryCreateSerializer, responses={201: QueryDetailSerializer}, examples=[OpenApiExample(
        "A manual query on a data point", request_only=True,
        value={"data_point": 81676, "recipient_role": "site", "severity": "major", "category": "range",
               "text": "Vital signs, Week 4: the systolic blood pressure recorded (1450 mmHg) is outside the "
                       "expected range (70-250 mmHg). Please verify the value against the source document."})])
    def create(self, request, *args, **kwargs):
        data = _valid(QueryCreateSerializer, request.data)
        subject, data_point = self._target(data)
        try:
            query = query_create(actor=request.user, study=subject.study, subject=subject, data_point=data_point,
                                 text=data["text"], recipient=data["recipient_role"], category=data["category"],
                                 severity=data["severity"], language=data["language"])
        except TransitionRefused as error:
            return _refused(error)
        return self._detail(query, status_code=status.HTTP_201_CREATED)

    def _transition(self, service, **kwargs) -> Response:
        query = self.get_object()  # 404 outside the user's scope
        try:
            query = service(query=query, actor=self.request.user, **kwargs)
        except TransitionRefused as error:
            return _refused(error)
        return self._detail(query)

    def _data(self) -> dict:
        return _valid(QueryTransitionSerializer, self.request.data)

    @extend_schema(request=QueryTransitionSerializer, responses=TRANSITION_RESPONSES, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def release(self, request, pk=None):
        """Candidate -> Open (data managers); `reason` optional."""
        return self._transition(query_release, reason=self._data()["reason"])

    @extend_schema(request=QueryTransitionSerializer, responses=TRANSITION_RESPONSES, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def edit(self, request, pk=None):
        """A candidate's new `text`, with a `reason` (data managers)."""
        data = self._data()
        return self._transition(query_edit, text=data["text"], reason=data["reason"])

    @extend_schema(request=QueryTransitionSerializer, responses=TRANSITION_RESPONSES, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def discard(self, request, pk=None):
        """Candidate -> Cancelled, with a `reason` (data managers)."""
        return self._transition(query_discard, reason=self._data()["reason"])

    @extend_schema(request=QueryTransitionSerializer, responses=TRANSITION_RESPONSES, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def answer(self, request, pk=None):
        """Open -> Answered, with a `text` (site staff of the query's site)."""
        return self._transition(query_answer, text=self._data()["text"])

    @extend_schema(request=QueryTransitionSerializer, responses=TRANSITION_RESPONSES, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def requery(self, request, pk=None):
        """Answered -> Open, with a `text` (data managers, CRAs)."""
        return self._transition(query_requery, text=self._data()["text"])

    @extend_schema(request=QueryTransitionSerializer, responses=TRANSITION_RESPONSES, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def close(self, request, pk=None):
        """Open or Answered -> Closed, with a `reason` and optionally a `resolution`."""
        data = self._data()
        return self._transition(query_close, reason=data["reason"], resolution=data["resolution"])

    @extend_schema(request=QueryTransitionSerializer, responses=TRANSITION_RESPONSES, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def cancel(self, request, pk=None):
        """Any state but Closed -> Cancelled, with a `reason`."""
        return self._transition(query_cancel, reason=self._data()["reason"])

    @extend_schema(request=QueryTransitionSerializer, responses=TRANSITION_RESPONSES, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def reassign(self, request, pk=None):
        """A new `recipient_role` (marking group), with a `reason`."""
        data = self._data()
        if "recipient_role" not in data:
            raise ValidationError_({"recipient_role": ["This field is required."]})
        return self._transition(query_reassign, recipient=data["recipient_role"], reason=data["reason"])

    @extend_schema(request=QueryBulkSerializer, responses=QuerySerializer(many=True), filters=False)
    @action(detail=False, methods=["post"], filterset_class=None, pagination_class=None)
    def bulk(self, request):
        """Deprecated (sunset 2027-06-30): use `POST bulk-actions/`, which answers row by row. One
        `action` with one `reason` on the queries `ids`: all or nothing; a refused row refuses the
        batch, its id in `extra.query`."""
        data = _valid(QueryBulkSerializer, request.data)
        ids = set(data["ids"])
        queries = list(self.get_queryset().filter(pk__in=ids))
        missing = sorted(ids - {q.pk for q in queries})
        if missing:  # the same answer for another site's query and one that does not exist
            return error_response(f"Query {missing[0]}: no such query.", query=missing[0],
                                  reasons=["No such query."])
        options = {}
        if data["action"] == "close" and "resolution" in data:
            options["resolution"] = data["resolution"]
        if data["action"] == "reassign":
            if "recipient_role" not in data:
                raise ValidationError_({"recipient_role": ["This field is required."]})
            options["recipient"] = data["recipient_role"]
        try:
            done = queries_bulk(queries=queries, actor=request.user, action=data["action"], reason=data["reason"],
                                **options)
        except TransitionRefused as error:
            return _refused(error)
        fresh = self.get_queryset().filter(pk__in=[q.pk for q in done]).order_by("pk")
        return Response(QuerySerializer(fresh, many=True).data)

    @extend_schema(request=QueryBulkActionSerializer, responses=QueryBulkResultSerializer, filters=False, examples=[
        OpenApiExample("Close answered queries one by one", request_only=True,
                       value={"action": "close", "ids": [2628, 2630], "reason": "Corrections verified.",
                              "resolution": "corrected", "atomic": False}),
        OpenApiExample("One applied, one refused", response_only=True, value={
            "action": "close", "atomic": False, "applied": 1, "refused": 1, "results": [
                {"id": 2628, "status": "applied", "code": 200, "message": "", "reasons": [], "query": None},
                {"id": 2630, "status": "refused", "code": 400, "message": "A query in state Closed cannot be closed.",
                 "reasons": ["A query in state Closed cannot be closed."], "query": None}]})])
    @action(detail=False, methods=["post"], url_path="bulk-actions", filterset_class=None, pagination_class=None)
    def bulk_actions(self, request):
        """One `action` (release, close, cancel, discard, reassign) with one `reason` on the queries
        `ids`, answered row by row: each id's `status` (applied, refused, not_found, not_applied),
        the `code` it alone would answer, the reasons and the query as it is now. With `atomic`
        true, one refused row refuses the batch (every other row: not_applied)."""
        data = _valid(QueryBulkActionSerializer, request.data)
        options = {}
        if data["action"] == "close" and "resolution" in data:
            options["resolution"] = data["resolution"]
        if data["action"] == "reassign":
            if "recipient_role" not in data:
                raise ValidationError_({"recipient_role": ["This field is required."]})
            options["recipient"] = data["recipient_role"]
        ids = sorted(set(data["ids"]))
        found = {q.pk: q for q in self.get_queryset().filter(pk__in=ids)}
        rows = {pk: {"id": pk, "status": "not_found", "code": 404, "message": "No such query.",
                     "reasons": ["No such query."], "query": None} for pk in ids if pk not in found}
        try:
            if data["atomic"]:
                outcome = self._bulk_atomic(list(found.values()), data, options, blocked=bool(rows))
            else:
                outcome = queries_bulk_each(queries=list(found.values()), actor=request.user,
                                            action=data["action"], reason=data["reason"], **options)
        except TransitionRefused as error:  # the batch itself: no reason given, say
            return _refused(error)
        fresh = {q.pk: q for q in self.get_queryset().filter(pk__in=list(found))}
        for query, refusal in outcome:
            row = {"id": query.pk, "query": None}
            if refusal is None:
                row |= {"status": "applied", "code": 200, "message": "", "reasons": []}
            elif refusal.status == 0:
                row |= {"status": "not_applied", "code": 409, "message": refusal.reason, "reasons": refusal.reasons}
            else:
                row |= {"status": "refused", "code": refusal.status, "message": refusal.reason,
                        "reasons": refusal.reasons}
            rows[query.pk] = row
        for row in rows.values():
            if row["id"] in fresh:
                row["query"] = QuerySerializer(fresh[row["id"]]).data
        results = [rows[pk] for pk in ids]
        applied = sum(row["status"] == "applied" for row in results)
        return Response({"action": data["action"], "atomic": data["atomic"], "applied": applied,
                         "refused": len(results) - applied, "results": results})

    def _bulk_atomic(self, queries, data, options, *, blocked: bool):
        """queries_bulk's all or nothing, as per-row outcomes (a row not applied: status 0)."""
        if blocked:
            refusal = TransitionRefused("Not applied: another row of the batch was not found.", status=0)
            return [(query, refusal) for query in queries]
        try:
            queries_bulk(queries=queries, actor=self.request.user, action=data["action"], reason=data["reason"],
                         **options)
        except TransitionRefused as error:
            if error.query_id is None:
                raise
            other = TransitionRefused(f"Not applied: query {error.query_id} was refused.", status=0)
            return [(query, error if query.pk == error.query_id else other) for query in queries]
        return [(query, None) for query in queries]


class EditCheckSerializer(serializers.ModelSerializer):
    item = serializers.SlugRelatedField(slug_field="oid", read_only=True)

    class Meta:
        model = EditCheck
        fields = ["id", "study", "code", "name", "rule_type", "item", "params", "severity", "active", "version",
                  "source", "created_at", "updated_at"]


class EditCheckWriteSerializer(serializers.Serializer):
    """A new rule (study, code, name, rule_type required) or a change to one; `item` is the item's
    OID; `reason` is required (audit trail)."""

    study = IdField(required=False)
    code = serializers.CharField(max_length=160, required=False)
    name = serializers.CharField(max_length=255, required=False)
    rule_type = serializers.ChoiceField(choices=EditCheck.RuleType.choices, required=False)
    item = serializers.CharField(max_length=128, required=False, allow_null=True)
    params = serializers.JSONField(required=False)
    severity = serializers.ChoiceField(choices=[("", ""), *Query.Severity.choices], required=False)
    active = serializers.BooleanField(required=False)
    reason = serializers.CharField(max_length=1000)


class RuleStatisticsSerializer(serializers.Serializer):
    """One site and rule (or EDC marking group) of the study's query history."""

    site = serializers.CharField(help_text="site number")
    rule = serializers.CharField()
    queries = serializers.IntegerField()
    query_rate = serializers.FloatField(allow_null=True, help_text="queries per subject of the site")
    closed = serializers.IntegerField()
    confirmed_correct = serializers.IntegerField()
    confirmation_rate = serializers.FloatField(allow_null=True, help_text="confirmed correct / closed with a "
                                                                         "known resolution")
    median_days_to_answer = serializers.FloatField(allow_null=True)


class WorkflowStartedSerializer(serializers.Serializer):
    run = serializers.IntegerField(help_text="GET /api/v1/workflow-runs/{run}/ follows it")
    status = serializers.CharField()


class EditCheckFilter(FilterSet):
    class Meta:
        model = EditCheck
        fields = ["study", "rule_type", "source", "active"]


class EditCheckViewSet(ApiView, mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
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

    @extend_schema(parameters=[OpenApiParameter("study", int, required=True)], filters=False,
                   responses=RuleStatisticsSerializer(many=True))
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
    study = study_for_review(user=request.user, pk=study_id)
    if study is None:
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
    updated_since_fields = ("found_at", "changed_at", "resolved_at")

    class Meta:
        model = Discrepancy
        fields = ["study", "site", "subject", "rule", "rule_type", "severity", "category", "status", "disposition",
                  "held_back"]

    def _held_back(self, queryset, name, value):
        held = Q(disposition=Discrepancy.Disposition.HELD_BACK)
        return queryset.filter(held) if value else queryset.exclude(held)


class DiscrepancyViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """What the QueryAnalyzer found: to the site as queries, held back for review, or for medical
    review. `POST run/?study=ID` starts the data_review workflow (data managers, sponsors)."""

    serializer_class = DiscrepancySerializer
    filterset_class = DiscrepancyFilter

    def get_queryset(self):
        return discrepancy_list(user=self.request.user)

    @extend_schema(request=None, parameters=[OpenApiParameter("study", int, required=True)], filters=False,
                   responses={202: WorkflowStartedSerializer})
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


class NotificationSerializer(serializers.ModelSerializer):
    query_url = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "kind", "text", "query", "query_url", "created_at", "read_at"]

    def get_query_url(self, notification) -> str | None:
        return f"/queries/{notification.query_id}/" if notification.query_id else None


class NotificationReadSerializer(serializers.Serializer):
    ids = serializers.ListField(child=IdField(), allow_empty=False, max_length=1000)


class NotificationReadItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["marked_read", "already_read", "not_found"])


class NotificationReadResultSerializer(serializers.Serializer):
    marked_read = serializers.IntegerField()
    results = NotificationReadItemSerializer(many=True)


class NotificationFilter(FilterSet):
    unread = django_filters.BooleanFilter(field_name="read_at", lookup_expr="isnull", help_text="only unread ones")
    updated_since_fields = ("created_at", "read_at")

    class Meta:
        model = Notification
        fields = ["unread"]


class NotificationViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """The caller's own in-app notifications (reminders, overdue notices, escalations), newest
    first; `?unread=true` for the unread ones; `POST read/ {"ids": [...]}` marks them read."""

    serializer_class = NotificationSerializer
    filterset_class = NotificationFilter

    def get_queryset(self):
        if not self.request.user.is_authenticated:
            return Notification.objects.none()
        return Notification.objects.filter(user=self.request.user)

    @extend_schema(request=NotificationReadSerializer, responses=NotificationReadResultSerializer, filters=False)
    @action(detail=False, methods=["post"], filterset_class=None, pagination_class=None)
    def read(self, request):
        """Mark the caller's notifications `ids` read; answered per id: marked_read, already_read,
        or not_found (another user's id is not found either)."""
        ids = sorted(set(_valid(NotificationReadSerializer, request.data)["ids"]))
        mine = Notification.objects.filter(user=request.user, pk__in=ids)
        unread = set(mine.filter(read_at__isnull=True).values_list("pk", flat=True))
        known = set(mine.values_list("pk", flat=True))
        marked = mine.filter(pk__in=unread, read_at__isnull=True).update(read_at=timezone.now())
        results = [{"id": pk, "status": "marked_read" if pk in unread else "already_read" if pk in known
                    else "not_found"} for pk in ids]
        return Response({"marked_read": marked, "results": results})
