"""/api/: version 1 of the REST API, JWT for integrations, and the OpenAPI schema and docs."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import routers

from agents.api import AgentViewSet, WorkflowRunViewSet
from config.api import ID_PATTERN, ApiView, api_not_found
from deviations import api as deviations_api
from queries.api import DiscrepancyViewSet, EditCheckViewSet, NotificationViewSet, QueryViewSet
from queries.metrics_api import QueryMetricsView
from sdv import api as sdv_api
from sdv import documents_api
from sdv.monitoring import api as monitoring_api
from studies import api as studies_api
from studies.auth_api import AuditedTokenObtainPairView, TokenRefreshView
from studies.webhooks import EdcWebhookView


class Router(routers.DefaultRouter):
    APIRootView = type("APIRootView", (ApiView, routers.APIRootView), {"__doc__": routers.APIRootView.__doc__})


router = Router()
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
router.register("deviations", deviations_api.DeviationViewSet, basename="deviation")
router.register("deviation-plans", deviations_api.DeviationPlanViewSet, basename="deviation-plan")
router.register("root-cause-analyses", deviations_api.RootCauseAnalysisViewSet, basename="root-cause-analysis")
router.register("capas", deviations_api.CapaViewSet, basename="capa")
router.register("compliance-reports", deviations_api.ComplianceReportViewSet, basename="compliance-report")
router.register("imports", studies_api.ImportViewSet, basename="import")
router.register("agents", AgentViewSet, basename="agent")
router.register("workflow-runs", WorkflowRunViewSet, basename="workflow-run")
router.register("kri-results", sdv_api.KriResultViewSet, basename="kri-result")
router.register("kri-definitions", sdv_api.KriDefinitionViewSet, basename="kri-definition")
router.register("site-risk", sdv_api.SiteRiskViewSet, basename="site-risk")
router.register("sdv-plans", sdv_api.SdvPlanViewSet, basename="sdv-plan")
router.register("kri-snapshots", sdv_api.KriSnapshotViewSet, basename="kri-snapshot")
router.register("monitoring-visits", monitoring_api.MonitoringVisitViewSet, basename="monitoring-visit")
router.register("source-documents", documents_api.SourceDocumentViewSet, basename="source-document")
router.register("source-verifications", documents_api.SourceVerificationViewSet, basename="source-verification")

urlpatterns = [
    path("v1/auth/token/", AuditedTokenObtainPairView.as_view(), name="token-obtain"),
    path("v1/auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    re_path(rf"^v1/webhooks/edc/(?P<connection_id>{ID_PATTERN})/$", EdcWebhookView.as_view(), name="edc-webhook"),
    path("v1/risk-config/", sdv_api.RiskConfigView.as_view(), name="risk-config"),
    path("v1/query-metrics/", QueryMetricsView.as_view(), name="query-metrics"),
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Anything else under /api/ (an unknown path, a malformed or too long id): the error shape.
    re_path(r"^.*$", api_not_found),
]
