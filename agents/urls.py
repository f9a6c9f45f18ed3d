from django.urls import path

from agents import views

urlpatterns = [
    path("agents/", views.agent_list_view, name="agent-list"),
    path("studies/<int:pk>/runs/", views.study_runs_view, name="study-runs"),
    path("runs/<int:pk>/", views.run_detail_view, name="workflow-run-detail"),
    path("runs/<int:pk>/cancel/", views.run_action_view, {"action": "cancel"}, name="workflow-run-cancel"),
    path("runs/<int:pk>/retry/", views.run_action_view, {"action": "retry"}, name="workflow-run-retry"),
    path("runs/<int:pk>/rollback/", views.run_action_view, {"action": "rollback"}, name="workflow-run-rollback"),
]
