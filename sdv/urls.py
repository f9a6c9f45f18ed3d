from django.urls import path

from sdv import views

urlpatterns = [
    path("studies/<int:pk>/risk/", views.risk_dashboard_view, name="study-risk"),
    path("studies/<int:pk>/risk/sites/<int:site_pk>/", views.site_risk_view, name="site-risk"),
]
