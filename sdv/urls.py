from django.urls import path

from sdv import views, workspace

urlpatterns = [
    path("studies/<int:pk>/risk/", views.risk_dashboard_view, name="study-risk"),
    path("studies/<int:pk>/risk/sites/<int:site_pk>/", views.site_risk_view, name="site-risk"),
    # Source data verification: the CRA's workspace (sdv/workspace.py)
    path("studies/<int:pk>/sdv/", workspace.sdv_overview_view, name="sdv-overview"),
    path("studies/<int:pk>/sdv/sites/<int:site_pk>/", workspace.sdv_site_view, name="sdv-site"),
    path("sdv/visits/<int:pk>/", workspace.sdv_visit_view, name="sdv-visit"),
    path("sdv/visits/<int:pk>/read/", workspace.sdv_read_view, name="sdv-read"),
    path("sdv/verifications/<int:pk>/action/", workspace.sdv_verification_action_view, name="sdv-verification-action"),
    path("sdv/verifications/<int:pk>/crop.png", workspace.source_verification_crop_view, name="sdv-crop"),
    path("sdv/data-points/<int:pk>/manual/", workspace.sdv_manual_view, name="sdv-manual"),
    path("sdv/documents/upload/", workspace.sdv_upload_view, name="sdv-upload"),
    path("sdv/documents/<int:pk>/file/", workspace.source_document_file_view, name="sdv-document-file"),
    path("sdv/documents/<int:pk>/pages/<int:number>.png", workspace.source_page_image_view, name="sdv-page-image"),
]
