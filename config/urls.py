from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("config.api_urls")),
    path("", include("config.health_urls")),
    path("", include("studies.urls")),
    path("", include("agents.urls")),
    path("", include("queries.urls")),
    path("", include("sdv.urls")),
    path("", include("deviations.urls")),
    path("", include("sdv.monitoring.urls")),
]
