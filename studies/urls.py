from django.contrib.auth import views as auth_views
from django.urls import path

from studies import views, views_imports

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),  # POST only (Django 5)
    path("", views.study_list_view, name="study-list"),
    path("studies/", views.study_list_view, name="study-list"),
    path("studies/<int:pk>/", views.study_detail_view, name="study-detail"),
    path("subjects/<int:pk>/", views.subject_detail_view, name="subject-detail"),
    path("data-points/<int:pk>/history/", views.data_point_history_view, name="data-point-history"),
    path("studies/<int:pk>/imports/", views_imports.study_imports_view, name="study-imports"),
    path("imports/<int:pk>/", views_imports.import_detail_view, name="import-detail"),
]
