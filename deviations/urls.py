from django.urls import path

from deviations import views

urlpatterns = [
    path("studies/<int:pk>/deviations/", views.deviation_log_view, name="study-deviations"),
    path("studies/<int:pk>/sites/<int:site_pk>/deviations/", views.deviation_log_view, name="site-deviations"),
    path("studies/<int:pk>/deviations/bulk/", views.deviation_bulk_view, name="study-deviation-bulk"),
    path("studies/<int:pk>/deviations/detect/", views.deviation_detect_view, name="study-deviation-detect"),
    path("studies/<int:pk>/deviations/new/", views.deviation_report_view, name="study-deviation-report"),
    path("studies/<int:pk>/deviations/dashboard/", views.deviation_dashboard_view, name="study-deviation-dashboard"),
    path("studies/<int:pk>/deviations/listing.<slug:kind>", views.deviation_listing_view,
         name="study-deviation-listing"),
    path("studies/<int:pk>/deviations/root-causes/", views.root_cause_list_view, name="study-root-causes"),
    path("studies/<int:pk>/deviations/reports/", views.compliance_report_list_view, name="study-deviation-reports"),
    path("studies/<int:pk>/capas/", views.capa_list_view, name="study-capas"),
    path("deviations/<int:pk>/", views.deviation_detail_view, name="deviation-detail"),
    path("capas/<int:pk>/", views.capa_detail_view, name="capa-detail"),
]
