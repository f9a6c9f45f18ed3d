from django.urls import path

from sdv.monitoring import views

urlpatterns = [
    path("studies/<int:pk>/monitoring/", views.plan_view, name="monitoring-plan"),
    path("studies/<int:pk>/monitoring/replan/", views.plan_replan_view, name="monitoring-replan"),
    path("monitoring/calendar/", views.my_calendar_view, name="monitoring-my-calendar"),
    path("monitoring/visits/<int:pk>/", views.visit_detail_view, name="monitoring-visit"),
    path("monitoring/visits/<int:pk>/letters/<str:letter>.pdf", views.letter_view, name="monitoring-letter"),
    path("monitoring/monitors/<int:monitor_pk>/<str:token>.ics", views.ics_view, name="monitoring-ics"),
]
