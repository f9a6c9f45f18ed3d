from django.urls import path

from queries import views

urlpatterns = [
    path("studies/<int:pk>/discrepancies/", views.discrepancy_list_view, name="study-discrepancies"),
    path("studies/<int:pk>/discrepancies/run/", views.analyzer_run_view, name="study-analyzer-run"),
    path("studies/<int:pk>/edit-checks/", views.edit_check_list_view, name="study-edit-checks"),
]
