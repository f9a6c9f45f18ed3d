"""API v1 of the agent framework: the registry (/agents/) and workflow runs (/workflow-runs/).

Access follows the study a run is about. The agents app imports no domain app (ARCHITECTURE.md),
so the app that owns studies hands over its scoped selectors at start-up through
`study_access_set` (as it hands over a study's sites to the orchestrator): a run of a study outside
the user's scope is not in the queryset (404), one in scope without the run_workflow capability is
refused (403). Runs about no study (study_id null: the command line, schedules) are superusers' only.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q, QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from agents.models import ACTIVE, AgentRun, AgentStep
from agents.registry import registered_agents
from config.api import ApiView, FilterSet, IdField, IntegerFilter, error_response

RUN_CAPABILITY = "run_workflow"


# --- The study access hook (set by the studies app in its AppConfig.ready) ------------------------
@dataclass(frozen=True)
class StudyAccess:
    study_list: Callable[..., QuerySet]  # (*, user) -> the studies the user may see
    study_user_can: Callable[..., bool]  # (*, user, capability, study) -> bool


_study_access: StudyAccess | None = None


def study_access_set(access: StudyAccess | None) -> None:
    global _study_access
    _study_access = access


def study_access() -> StudyAccess:
    if _study_access is None:
        raise ImproperlyConfigured("No app has registered study access (agents.api.study_access_set)")
    return _study_access


def visible_study(*, user, study_id):
    """The study if `user` may see it, else None (whether it exists or not)."""
    try:
        return study_access().study_list(user=user).filter(pk=int(study_id)).first()
    except (TypeError, ValueError):
        return None


def workflow_run_list(*, user) -> QuerySet[AgentRun]:
    """Runs of the studies the user sees; runs about no study for superusers only."""
    if not user.is_authenticated:
        return AgentRun.objects.none()
    in_scope = Q(study_id__in=study_access().study_list(user=user).values("id"))
    if user.is_superuser:
        in_scope |= Q(study_id=None)
    return AgentRun.objects.filter(in_scope).select_related("definition", "triggered_by")


def user_can_run(*, user, study) -> bool:
    """Start, cancel, retry and roll back: data managers and sponsors of the study (and superusers)."""
    if study is None:
        return user.is_superuser
    return study_access().study_user_can(user=user, capability=RUN_CAPABILITY, study=study)


# --- Registry -------------------------------------------------------------------------------------
def agent_rows(*, study=None) -> list[dict]:
    """The registered agents with their health, and a study's config and enabled flag if given."""
    from agents.health import agent_health_all
    from agents.services import agent_config_get

    health = agent_health_all()
    rows = []
    for agent in registered_agents():
        row = {
            "name": agent.name,
            "version": agent.version,
            "description": agent.description,
            "queue": agent.queue,
            "config_schema": agent.config_schema,
            "health": health.get(agent.name, {}),
        }
        if study is not None:
            stored = agent_config_get(agent=agent.name, study_id=study.pk)
            row |= {"config": stored.config, "enabled": stored.enabled}
        rows.append(row)
    return rows


class AgentSerializer(serializers.Serializer):
    """One registered agent (a row of agent_rows)."""

    name = serializers.CharField()
    version = serializers.CharField()
    description = serializers.CharField()
    queue = serializers.CharField()
    config_schema = serializers.DictField(help_text="JSON schema of the agent's per-study configuration")
    health = serializers.DictField(help_text="success/failure counts, failure rate, p50/p95, queue depth, "
                                             "worker heartbeat")
    config = serializers.DictField(required=False, help_text="with ?study=: the study's configuration")
    enabled = serializers.BooleanField(required=False, help_text="with ?study=: whether the agent runs there")


class AgentViewSet(ApiView, viewsets.GenericViewSet):
    """GET /api/v1/agents/[?study=ID]: the registry, with health; with a study, its config too."""

    serializer_class = AgentSerializer  # rows are plain dicts built by agent_rows
    filter_backends = []

    @extend_schema(parameters=[OpenApiParameter("study", int, description="add this study's config and enabled flag")])
    def list(self, request):
        study = None
        if "study" in request.query_params:
            study = visible_study(user=request.user, study_id=request.query_params["study"])
            if study is None:
                raise Http404
        page = self.paginate_queryset(agent_rows(study=study))
        return self.get_paginated_response(page)


# --- Workflow runs --------------------------------------------------------------------------------
class AgentStepSerializer(serializers.ModelSerializer):
    duration_ms = serializers.SerializerMethodField()
    compensates = serializers.CharField(source="compensates.key", default=None, read_only=True, allow_null=True)

    class Meta:
        model = AgentStep
        fields = ["id", "key", "agent", "agent_version", "stage", "status", "attempts", "started_at", "finished_at",
                  "duration_ms", "error", "compensates"]

    def get_duration_ms(self, step) -> int | None:
        return step_duration_ms(step)


def step_duration_ms(step) -> int | None:
    if step.started_at is None or step.finished_at is None:
        return None
    return round((step.finished_at - step.started_at).total_seconds() * 1000)


class WorkflowRunSerializer(serializers.ModelSerializer):
    study = serializers.IntegerField(source="study_id", read_only=True)
    definition = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    triggered_by = serializers.CharField(source="triggered_by.username", default=None, read_only=True, allow_null=True)

    class Meta:
        model = AgentRun
        fields = ["id", "workflow", "definition", "study", "status", "attempt", "progress", "trigger",
                  "triggered_by", "created_at", "started_at", "finished_at", "error"]

    def get_definition(self, run) -> dict | None:
        if run.definition is None:
            return None
        return {"name": run.definition.name, "version": run.definition.version}

    def get_progress(self, run) -> dict:
        return {"steps_done": run.steps_done, "steps_total": run.steps_total}


class WorkflowRunDetailSerializer(WorkflowRunSerializer):
    steps = serializers.SerializerMethodField()

    class Meta(WorkflowRunSerializer.Meta):
        fields = [*WorkflowRunSerializer.Meta.fields, "steps"]

    def get_steps(self, run) -> list[dict]:
        steps = run.steps.select_related("compensates").order_by("stage", "id")
        return AgentStepSerializer(steps, many=True).data


class WorkflowRunStartSerializer(serializers.Serializer):
    workflow = serializers.CharField(max_length=64)
    study = IdField()


class WorkflowRunFilter(FilterSet):
    study = IntegerFilter(field_name="study_id")
    updated_since_fields = ("created_at", "started_at", "finished_at")

    class Meta:
        model = AgentRun
        fields = ["study", "workflow", "status", "trigger"]


class WorkflowRunViewSet(ApiView, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    filterset_class = WorkflowRunFilter

    def get_queryset(self):
        return workflow_run_list(user=self.request.user)

    def get_serializer_class(self):
        return WorkflowRunSerializer if self.action == "list" else WorkflowRunDetailSerializer

    @extend_schema(request=WorkflowRunStartSerializer, responses={201: WorkflowRunDetailSerializer})
    def create(self, request, *args, **kwargs):
        """Start the newest version of a workflow on a study (data managers and sponsors)."""
        from agents.orchestrator import WorkflowCannotStart, WorkflowNotFound, workflow_start
        from agents.services import WorkflowRunOverlap

        params = WorkflowRunStartSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        study = visible_study(user=request.user, study_id=params.validated_data["study"])
        if study is None:
            raise Http404
        self._require_run_capability(study)
        try:
            run = workflow_start(name=params.validated_data["workflow"], study_id=study.pk,
                                 trigger=AgentRun.Trigger.MANUAL, actor=request.user)
        except WorkflowNotFound as exc:
            return error_response(str(exc), fields={"workflow": [str(exc)]})
        except WorkflowCannotStart as exc:
            return error_response(str(exc))
        except WorkflowRunOverlap as exc:
            active = AgentRun.objects.filter(
                workflow=params.validated_data["workflow"], study_id=study.pk, status__in=ACTIVE
            ).first()
            return error_response(str(exc), status_code=status.HTTP_409_CONFLICT,
                                  active_run=active.pk if active else None)
        run = self.get_queryset().get(pk=run.pk)
        return Response(WorkflowRunDetailSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=WorkflowRunDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a pending or running run: pending steps are cancelled, running ones finish."""
        from agents.services import run_cancel

        return self._act(lambda run: run_cancel(run_id=run.pk))

    @extend_schema(request=None, responses=WorkflowRunDetailSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Re-run a failed or cancelled run from its first unfinished step."""
        from agents.orchestrator import run_retry

        return self._act(lambda run: run_retry(run_id=run.pk))

    @extend_schema(request=None, responses=WorkflowRunDetailSerializer)
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        """Undo a failed or cancelled run: its compensation steps run in reverse order."""
        from agents.orchestrator import run_rollback

        return self._act(lambda run: run_rollback(run_id=run.pk))

    def _act(self, service) -> Response:
        from agents.services import RunNotInState, WorkflowRunOverlap

        run = self.get_object()  # 404 outside the user's scope
        study = visible_study(user=self.request.user, study_id=run.study_id) if run.study_id else None
        self._require_run_capability(study)
        try:
            service(run)
        except (RunNotInState, WorkflowRunOverlap) as exc:
            return error_response(str(exc), status_code=status.HTTP_409_CONFLICT, status=run.status)
        run = self.get_queryset().get(pk=run.pk)
        return Response(WorkflowRunDetailSerializer(run).data)

    def _require_run_capability(self, study) -> None:
        if not user_can_run(user=self.request.user, study=study):
            raise PermissionDenied("Only data managers and sponsors of the study may start or change its runs.")
