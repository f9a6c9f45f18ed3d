"""/api/: version 1 of the REST API, JWT for integrations, and the OpenAPI schema and docs."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter
from rest_framework_simplejwt.views import TokenRefreshView

from agents.api import AgentViewSet, WorkflowRunViewSet
from deviations.api import DeviationViewSet
from queries.api import DiscrepancyViewSet, EditCheckViewSet, NotificationViewSet, QueryViewSet
from queries.metrics_api import QueryMetricsView
from sdv import api as sdv_api
from sdv import documents_api
from studies import api as studies_api
from studies.auth_api import AuditedTokenObtainPairView
from studies.webhooks import EdcWebhookView

router = DefaultRouter()
router.register("studies", studies_api.StudyViewSet, basename="study")
router.register("sites", studies_api.SiteViewSet, basename="site")
router.register("subjects", studies_api.SubjectViewSet, basename="subject")
router.register("visits", studies_api.SubjectVisitViewSet, basename="visit")
router.register("forms", studies_api.FormDefinitionViewSet, basename="form")
router.register("items", studies_api.ItemDefinitionViewSet, basename="item")
router.register("data-points", studies_api.DataPointViewSet, basename="data-point")
router.register("queries", QueryViewSet, basename="query")
router.register("notifications", NotificationViewSet, basename="notification")
router.register("edit-checks", EditCheckViewSet, basename="edit-check")
router.register("discrepancies", DiscrepancyViewSet, basename="discrepancy")
router.register("deviations", DeviationViewSet, basename="deviation")
router.register("imports", studies_api.ImportViewSet, basename="import")
router.register("agents", AgentViewSet, basename="agent")
router.register("workflow-runs", WorkflowRunViewSet, basename="workflow-run")
router.register("kri-results", sdv_api.KriResultViewSet, basename="kri-result")
router.register("kri-definitions", sdv_api.KriDefinitionViewSet, basename="kri-definition")
router.register("site-risk", sdv_api.SiteRiskViewSet, basename="site-risk")
router.register("sdv-plans", sdv_api.SdvPlanViewSet, basename="sdv-plan")
router.register("kri-snapshots", sdv_api.KriSnapshotViewSet, basename="kri-snapshot")
router.register("source-documents", documents_api.SourceDocumentViewSet, basename="source-document")
router.register("source-verifications", documents_api.SourceVerificationViewSet, basename="source-verification")

urlpatterns = [
    path("v1/auth/token/", AuditedTokenObtainPairView.as_view(), name="token-obtain"),
    path("v1/auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("v1/webhooks/edc/<int:connection_id>/", EdcWebhookView.as_view(), name="edc-webhook"),
    path("v1/risk-config/", sdv_api.RiskConfigView.as_view(), name="risk-config"),
    path("v1/query-metrics/", QueryMetricsView.as_view(), name="query-metrics"),
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
