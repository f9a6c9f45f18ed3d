from django.urls import path

from queries import views

urlpatterns = [
    path("studies/<int:pk>/discrepancies/", views.discrepancy_list_view, name="study-discrepancies"),
    path("studies/<int:pk>/discrepancies/run/", views.analyzer_run_view, name="study-analyzer-run"),
    path("studies/<int:pk>/edit-checks/", views.edit_check_list_view, name="study-edit-checks"),
    path("queries/", views.query_inbox_view, name="query-inbox"),
    path("notifications/", views.notification_list_view, name="notification-list"),
    path("queries/bulk/", views.query_bulk_view, name="query-bulk"),
    path("queries/<int:pk>/", views.query_detail_view, name="query-detail"),
    path("queries/<int:pk>/<slug:transition>/", views.query_transition_view, name="query-transition"),
    path("studies/<int:pk>/queries/", views.query_inbox_view, name="study-queries"),
    path("studies/<int:pk>/queries/bulk/", views.query_bulk_view, name="study-query-bulk"),
    path("studies/<int:pk>/queries/new/", views.query_raise_view, name="study-query-raise"),
    path("studies/<int:pk>/queries/metrics/", views.query_metrics_view, name="study-query-metrics"),
]
