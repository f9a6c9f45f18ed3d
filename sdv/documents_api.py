"""API v1 of source data verification.

- `POST /api/v1/source-documents/` (multipart: `study`, `subject_id`, `visit_oid` (optional), `file`)
  -> 201 with the document (200 with the existing one when the same file was already uploaded for
  that visit); refused with 400 and the reason (type, size, pages, bomb, encryption, unknown
  subject or visit), nothing stored. `GET` lists and reads documents (site-scoped);
  `GET /api/v1/source-documents/{id}/file/` is the file itself.
- `GET /api/v1/source-verifications/?study=ID` (filters subject, visit, item, verdict, document):
  the verdict on each EDC value; `POST /api/v1/source-verifications/{id}/confirm/` confirms it or,
  with another `verdict` and a `reason`, overrides it; `.../{id}/query/` raises a query on it;
  `POST /api/v1/source-verifications/manual/` records a manual SDV against paper on site.
"""

import django_filters
from django.conf import settings
from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from config.api import ApiView, FilterSet, IdField, IntegerFilter
from queries.models import Query
from sdv.documents import document_path, document_upload, source_document_list
from sdv.models import SourceDocument, SourceVerification
from sdv.verification.selectors import sdv_data_points, source_verification_list
from sdv.verification.services import (
    CONFIRMABLE,
    data_point_verify_manually,
    verification_confirm,
    verification_query_raise,
)
from studies.selectors import study_list


# --- Documents --------------------------------------------------------------------------------------
class SourceDocumentSerializer(serializers.ModelSerializer):
    subject_id = serializers.CharField(source="subject.subject_id", read_only=True)
    visit_oid = serializers.CharField(source="visit.definition.oid", read_only=True, allow_null=True, default=None)
    uploaded_by = serializers.CharField(source="uploaded_by.username", read_only=True, allow_null=True, default=None)
    file_url = serializers.SerializerMethodField()

    class Meta:
        model = SourceDocument
        fields = ["id", "study", "site", "subject", "subject_id", "visit", "visit_oid", "status", "content_type",
                  "original_name", "sha256", "file_size", "page_count", "text_source", "error", "uploaded_by",
                  "uploaded_at", "read_at", "agent_version", "file_url"]
        extra_kwargs = {"visit": {"allow_null": True}, "read_at": {"allow_null": True}}

    def get_file_url(self, document) -> str:
        return f"/api/v1/source-documents/{document.pk}/file/"


class SourceDocumentUploadSerializer(serializers.Serializer):
    study = IdField(help_text="The study's database id")
    subject_id = serializers.CharField(max_length=64, help_text="The subject's id as the EDC knows it")
    visit_oid = serializers.CharField(max_length=128, required=False, allow_blank=True, default="",
                                      help_text="The visit's OID; empty for a document about the subject as a whole")
    file = serializers.FileField(help_text="PDF, PNG, JPEG or TIFF (the type is read from the content)",
                                 allow_empty_file=False)


class SourceDocumentFilter(FilterSet):
    study = IntegerFilter()
    site = IntegerFilter()
    subject = IntegerFilter()
    visit = IntegerFilter()
    subject_id = django_filters.CharFilter(field_name="subject__subject_id")
    visit_oid = django_filters.CharFilter(field_name="visit__definition__oid")

    class Meta:
        model = SourceDocument
        fields = ["study", "site", "subject", "visit", "subject_id", "visit_oid", "status"]


class SourceDocumentViewSet(ApiView, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Source documents of the subjects the caller may see."""

    serializer_class = SourceDocumentSerializer
    filterset_class = SourceDocumentFilter
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return SourceDocument.objects.none()
        return source_document_list(user=self.request.user).order_by("-uploaded_at", "-pk")

    @extend_schema(request={"multipart/form-data": SourceDocumentUploadSerializer},
                   responses={201: SourceDocumentSerializer, 200: SourceDocumentSerializer})
    def create(self, request, *args, **kwargs):
        """Upload a source document for a subject (and visit). The type is read from the file's
        magic bytes; size, page and pixel limits apply; encrypted or malformed PDFs are refused.
        Answers 200 with the existing document when the same file was uploaded for that visit."""
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > settings.SDV_UPLOAD_MAX_BYTES + 64 * 1024:
            raise ApiValidationError({"file": f"The upload is over the limit of {settings.SDV_UPLOAD_MAX_BYTES:,} "
                                              "bytes."})
        upload = SourceDocumentUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        data = upload.validated_data
        study = study_list(user=request.user).filter(pk=data["study"]).first()
        if study is None:
            raise ApiValidationError({"study": f"No study {data['study']}."})
        document, created = document_upload(study=study, subject_id=data["subject_id"], visit_oid=data["visit_oid"],
                                            upload=data["file"], actor=request.user)
        document = self.get_queryset().get(pk=document.pk)
        return Response(SourceDocumentSerializer(document).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(responses={(200, media): OpenApiResponse(OpenApiTypes.BINARY, description="The file as uploaded")
                              for media in ("application/pdf", "image/png", "image/jpeg", "image/tiff")},
                   filters=False)
    @action(detail=True, methods=["get"], filterset_class=None)
    def file(self, request, pk=None):
        """The document's file as uploaded (only for users who may see its subject)."""
        document = self.get_object()
        return document_file_response(document)


def document_file_response(document: SourceDocument) -> FileResponse:
    path = document_path(document)
    if not path.is_file():
        raise Http404
    response = FileResponse(open(path, "rb"), content_type=document.content_type or "application/octet-stream")
    response["Content-Disposition"] = f'inline; filename="document-{document.pk}{path.suffix}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    response["Content-Security-Policy"] = "sandbox"  # a PDF's scripts, if any, run nowhere
    return response


# --- Verifications ----------------------------------------------------------------------------------
class SourceVerificationSerializer(serializers.ModelSerializer):
    subject_id = serializers.CharField(source="subject.subject_id")
    visit_oid = serializers.CharField(source="visit.definition.oid")
    item_oid = serializers.CharField(source="item.oid")
    verified_by = serializers.CharField(source="verified_by.username", allow_null=True, default=None)
    stale = serializers.SerializerMethodField(help_text="The EDC value changed since the verdict")
    current_edc_value = serializers.CharField(source="data_point.raw_value")

    class Meta:
        model = SourceVerification
        fields = ["id", "subject_id", "visit_oid", "item_oid", "verdict", "edc_value", "edc_unit", "source_value",
                  "source_unit", "confidence", "document", "page", "bbox", "verified_by", "verified_at",
                  "study", "site", "subject", "visit", "item", "data_point", "method", "agent_verdict", "review",
                  "reason", "analyte", "source_name", "explanation", "row_bbox", "data_point_version",
                  "current_edc_value", "stale", "query", "agent_version", "updated_at"]
        extra_kwargs = {name: {"allow_null": True} for name in ("confidence", "document", "page", "bbox",
                                                                 "verified_at", "row_bbox", "query")}

    def get_stale(self, verification) -> bool:
        return verification.stale


class SourceVerificationFilter(FilterSet):
    study = IntegerFilter()
    site = IntegerFilter()
    document = IntegerFilter()
    data_point = IntegerFilter()
    subject = django_filters.CharFilter(field_name="subject__subject_id", help_text="The subject's id in the EDC")
    visit = django_filters.CharFilter(field_name="visit__definition__oid", help_text="The visit's OID")
    item = django_filters.CharFilter(field_name="item__oid", help_text="The item's OID")
    verdict = django_filters.ChoiceFilter(choices=SourceVerification.Verdict.choices)
    method = django_filters.ChoiceFilter(choices=SourceVerification.Method.choices)

    class Meta:
        model = SourceVerification
        fields = ["study", "site", "document", "data_point", "subject", "visit", "item", "verdict", "method"]


class ConfirmSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=SourceVerification.Verdict.choices, required=False,
                                      help_text=f"One of {', '.join(CONFIRMABLE)}; another verdict than the "
                                                "agent's overrides it (a reason required)")
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ManualSerializer(serializers.Serializer):
    data_point = IdField()
    verdict = serializers.ChoiceField(choices=SourceVerification.Verdict.choices, default="verified",
                                      help_text="verified or discrepancy")
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class QueryRaisedSerializer(serializers.Serializer):
    query = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Query.State.choices)
    created = serializers.BooleanField(help_text="False: an active query on the data point was already there")


class SourceVerificationViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """The verdict on each EDC value against its source documents (and manual SDV), for the
    study-wide roles and the CRAs of each site."""

    serializer_class = SourceVerificationSerializer
    filterset_class = SourceVerificationFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return SourceVerification.objects.none()
        return source_verification_list(user=self.request.user).order_by("subject__subject_id", "visit_id",
                                                                         "item__order", "item_id", "id")

    @extend_schema(request=ConfirmSerializer, responses={200: SourceVerificationSerializer}, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def confirm(self, request, pk=None):
        """Confirm the verdict, or override it with another `verdict` and a `reason`."""
        verification = self.get_object()
        data = ConfirmSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        verification = verification_confirm(verification=verification, actor=request.user,
                                            verdict=data.validated_data.get("verdict", ""),
                                            reason=data.validated_data["reason"])
        return Response(SourceVerificationSerializer(self.get_queryset().get(pk=verification.pk)).data)

    @extend_schema(request=None, responses={200: QueryRaisedSerializer, 201: QueryRaisedSerializer}, filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def query(self, request, pk=None):
        """Raise a query on the verdict's data point (Open, neutral template text), or get the active one."""
        query, created = verification_query_raise(verification=self.get_object(), actor=request.user)
        return Response({"query": query.pk, "state": query.state, "created": created},
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=ManualSerializer, responses={200: SourceVerificationSerializer}, filters=False)
    @action(detail=False, methods=["post"], filterset_class=None)
    def manual(self, request):
        """Manual SDV: a value verified (or flagged) against paper on site, without a document."""
        data = ManualSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        point = sdv_data_points(user=request.user).filter(pk=data.validated_data["data_point"]).first()
        if point is None:
            raise Http404
        row = data_point_verify_manually(data_point=point, actor=request.user, verdict=data.validated_data["verdict"],
                                         reason=data.validated_data["reason"])
        return Response(SourceVerificationSerializer(self.get_queryset().get(pk=row.pk)).data)
