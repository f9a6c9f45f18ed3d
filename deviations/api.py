"""API v1 of protocol deviations: the deviation log (read, report, review, code), the ICH E3 listing
(PDF, Excel) and the SDTM DV file, deviation plans, root-cause analyses, CAPAs and the periodic
compliance reports. Every read starts from a scoped selector (another site's row is a 404); every
write is one audited service (deviations.services, .rootcause, .capa, .reporting)."""

import django_filters
from django.contrib.auth import get_user_model
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.exceptions import ValidationError as ValidationError_
from rest_framework.response import Response

from agents.orchestrator import WorkflowCannotStart, workflow_start
from agents.services import WorkflowRunOverlap
from config.api import ApiView, FilterSet, error_response
from deviations.capa import capa_create, capa_effectiveness_check, capa_update
from deviations.models import Capa, ComplianceReport, Deviation, DeviationPlan, RootCause, RootCauseAnalysis
from deviations.reporting import SIGNATURE_MEANINGS, compliance_report_sign, dv_bytes, listing_pdf, listing_xlsx
from deviations.rootcause import root_cause_decide
from deviations.selectors import (
    capa_list,
    compliance_report_list,
    deviation_list,
    deviation_study_can,
    deviation_user_can,
    plan_list,
    root_cause_analysis_list,
)
from deviations.services import (
    TRANSITIONS,
    deviation_recode,
    deviation_report,
    deviation_root_cause_set,
    deviation_transition,
    deviations_bulk_transition,
)
from studies.models import Study
from studies.selectors import site_list, study_list, study_user_can, subject_list, subject_visit_list


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class DeviationSerializer(serializers.ModelSerializer):
    site_number = serializers.CharField(source="site.number", read_only=True)
    subject_id = serializers.CharField(source="subject.subject_id", read_only=True, allow_null=True, default=None)
    visit = serializers.CharField(source="visit.definition.name", read_only=True, allow_null=True, default=None,
                                  help_text="The visit's name (SDTM VISIT), where the deviation is tied to one")
    occurred_on = serializers.DateField(allow_null=True, read_only=True)
    evidence = serializers.JSONField(read_only=True, help_text="The records and the rule (detected deviations)")

    class Meta:
        model = Deviation
        fields = ["id", "study", "site", "site_number", "subject", "subject_id", "category", "importance", "dvcat",
                  "dvdecod", "dvterm", "status", "resolution", "source", "occurred_on", "visit", "description",
                  "evidence", "rule", "term", "epoch", "root_cause", "coding_by_person", "importance_by_person",
                  "detected_on", "closed_on", "created_at"]
        read_only_fields = fields


class DeviationHistorySerializer(serializers.Serializer):
    history_date = serializers.DateTimeField()
    history_type = serializers.CharField()
    history_user = serializers.CharField(allow_null=True)
    reason = serializers.CharField(allow_null=True)
    changes = serializers.ListField(child=serializers.DictField())


def deviation_history_rows(deviation: Deviation) -> list[dict]:
    rows = list(deviation.history.select_related("history_user").order_by("history_date", "history_id"))
    out, previous = [], None
    for row in rows:
        changes = [] if previous is None else [{"field": c.field, "old": c.old, "new": c.new}
                                               for c in row.diff_against(previous).changes]
        out.append({"history_date": row.history_date,
                    "history_type": {"+": "created", "~": "changed", "-": "deleted"}.get(row.history_type),
                    "history_user": row.history_user.username if row.history_user_id else None,
                    "reason": row.history_change_reason, "changes": changes})
        previous = row
    return out


class DeviationDetailSerializer(DeviationSerializer):
    history = serializers.SerializerMethodField()

    class Meta(DeviationSerializer.Meta):
        fields = [*DeviationSerializer.Meta.fields, "history"]
        read_only_fields = fields

    @extend_schema(responses=DeviationHistorySerializer(many=True))
    def get_history(self, deviation) -> list[dict]:
        return DeviationHistorySerializer(deviation_history_rows(deviation), many=True).data


class DeviationFilter(FilterSet):
    site_number = django_filters.CharFilter(field_name="site__number", help_text="site number")
    subject_id = django_filters.CharFilter(field_name="subject__subject_id", help_text="the subject's id")
    occurred_after = django_filters.DateFilter(field_name="occurred_on", lookup_expr="gte")
    occurred_before = django_filters.DateFilter(field_name="occurred_on", lookup_expr="lte")
    dvcat = django_filters.CharFilter()

    class Meta:
        model = Deviation
        fields = ["study", "site", "subject", "category", "importance", "status", "source", "resolution"]


class DeviationReportSerializer(serializers.Serializer):
    """A deviation reported by site staff or a CRA: of a subject (and visit), or of a site."""

    subject = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**63 - 1)
    site = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**63 - 1,
                                    help_text="Only for a site-level deviation (no subject)")
    visit = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**63 - 1)
    category = serializers.ChoiceField(choices=Deviation.Category.choices)
    description = serializers.CharField(max_length=4000)
    occurred_on = serializers.DateField(required=False, allow_null=True)
    dvdecod = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    term = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    importance = serializers.ChoiceField(choices=Deviation.Importance.choices, required=False)


class DeviationTransitionSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000)
    resolution = serializers.ChoiceField(choices=Deviation.Resolution.choices, default=Deviation.Resolution.CONFIRMED,
                                         help_text="close only")


class DeviationBulkSerializer(DeviationTransitionSerializer):
    transition = serializers.ChoiceField(choices=list(TRANSITIONS))
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**63 - 1), min_length=1,
                                max_length=1000)


class DeviationRecodeSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000)
    dvdecod = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    dvcat = serializers.CharField(max_length=200, required=False, allow_blank=True, default="",
                                  help_text="Only where the DVDECOD is under more than one DVCAT")
    importance = serializers.ChoiceField(choices=Deviation.Importance.choices, required=False)


class RootCauseSetSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000)
    root_cause = serializers.ChoiceField(choices=RootCause.choices)


class RunAcceptedSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    status = serializers.CharField()


def _study_param(request, *, capability: str | None = None) -> Study:
    try:
        study_id = int(request.query_params.get("study", ""))
    except ValueError:
        raise ValidationError_({"study": ["A study id is required."]}) from None
    study = study_list(user=request.user).filter(pk=study_id).first() if 0 < study_id < 2**63 else None
    if study is None:
        raise NotFound("No such study.")
    if capability and not deviation_study_can(user=request.user, capability=capability, study=study):
        raise PermissionDenied("Your role may not do this for the whole study.")
    return study


STUDY = OpenApiParameter("study", int, required=True)
FILE = OpenApiResponse(response=OpenApiTypes.BINARY, description="The file")


class DeviationViewSet(ApiView, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Deviations of the sites you see (`?study=ID` and the filters source, category, importance,
    status, site / site_number, subject / subject_id). `POST` reports one (site staff, CRAs);
    `POST {id}/review|close|reopen/` moves it (data managers, medical monitors, with a reason);
    `POST {id}/recode/` re-codes it or changes its importance, kept from then on by the detector."""

    filterset_class = DeviationFilter

    def get_queryset(self):
        return deviation_list(user=self.request.user).order_by("-occurred_on", "-id")

    def get_serializer_class(self):
        return DeviationSerializer if self.action == "list" else DeviationDetailSerializer

    def _detail(self, deviation, code=status.HTTP_200_OK) -> Response:
        fresh = self.get_queryset().get(pk=deviation.pk)
        return Response(DeviationDetailSerializer(fresh, context=self.get_serializer_context()).data, status=code)

    @extend_schema(request=DeviationReportSerializer, responses={201: DeviationDetailSerializer})
    def create(self, request, *args, **kwargs):
        data = _valid(DeviationReportSerializer, request.data)
        user, subject, visit = request.user, None, None
        if data.get("subject"):
            subject = subject_list(user=user).filter(pk=data["subject"]).first()
            if subject is None:
                raise ValidationError_({"subject": ["No such subject."]})
            site = subject.site
        elif data.get("site"):
            site = site_list(user=user).filter(pk=data["site"]).first()
            if site is None:
                raise ValidationError_({"site": ["No such site."]})
        else:
            raise ValidationError_({"subject": ["A subject (or, for a site-level deviation, a site) is required."]})
        if data.get("visit"):
            visit = subject_visit_list(user=user).filter(pk=data["visit"]).first()
            if visit is None:
                raise ValidationError_({"visit": ["No such visit."]})
        deviation = deviation_report(actor=user, site=site, subject=subject, visit=visit, category=data["category"],
                                     description=data["description"], occurred_on=data.get("occurred_on"),
                                     dvdecod=data["dvdecod"], term=data["term"], importance=data.get("importance", ""))
        return self._detail(deviation, status.HTTP_201_CREATED)

    def _transition(self, transition: str) -> Response:
        deviation = self.get_object()
        data = _valid(DeviationTransitionSerializer, self.request.data)
        deviation = deviation_transition(deviation=deviation, actor=self.request.user, transition=transition,
                                         reason=data["reason"], resolution=data["resolution"])
        return self._detail(deviation)

    @extend_schema(request=DeviationTransitionSerializer, responses={200: DeviationDetailSerializer},
                   filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def review(self, request, pk=None):
        """open -> under_review, with a reason."""
        return self._transition("review")

    @extend_schema(request=DeviationTransitionSerializer, responses={200: DeviationDetailSerializer},
                   filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def close(self, request, pk=None):
        """open or under_review -> closed, with a reason and a resolution (confirmed / withdrawn)."""
        return self._transition("close")

    @extend_schema(request=DeviationTransitionSerializer, responses={200: DeviationDetailSerializer},
                   filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def reopen(self, request, pk=None):
        """closed or under_review -> open, with a reason."""
        return self._transition("reopen")

    @extend_schema(request=DeviationRecodeSerializer, responses={200: DeviationDetailSerializer},
                   filters=False)
    @action(detail=True, methods=["post"], filterset_class=None)
    def recode(self, request, pk=None):
        """A person's DVDECOD (of the vocabulary) and/or importance, with a reason."""
        deviation = self.get_object()
        data = _valid(DeviationRecodeSerializer, request.data)
        deviation = deviation_recode(deviation=deviation, actor=request.user, reason=data["reason"],
                                     dvdecod=data["dvdecod"] or None, dvcat=data["dvcat"] or None,
                                     importance=data.get("importance"))
        return self._detail(deviation)

    @extend_schema(request=RootCauseSetSerializer, responses={200: DeviationDetailSerializer},
                   filters=False)
    @action(detail=True, methods=["post"], filterset_class=None, url_path="root-cause")
    def root_cause(self, request, pk=None):
        deviation = self.get_object()
        data = _valid(RootCauseSetSerializer, request.data)
        deviation = deviation_root_cause_set(deviation=deviation, actor=request.user, root_cause=data["root_cause"],
                                             reason=data["reason"])
        return self._detail(deviation)

    @extend_schema(request=DeviationBulkSerializer, responses={200: DeviationSerializer(many=True)},
                   filters=False)
    @action(detail=False, methods=["post"], filterset_class=None, pagination_class=None)
    def bulk(self, request):
        """One transition with one reason on many deviations: all or nothing."""
        data = _valid(DeviationBulkSerializer, request.data)
        ids = set(data["ids"])
        rows = list(self.get_queryset().filter(pk__in=ids))
        missing = sorted(ids - {d.pk for d in rows})
        if missing:
            return error_response(f"Deviation {missing[0]}: no such deviation.", deviation=missing[0])
        deviations_bulk_transition(deviations=rows, actor=request.user, transition=data["transition"],
                                   reason=data["reason"], resolution=data["resolution"])
        return Response(DeviationSerializer(self.get_queryset().filter(pk__in=ids).order_by("pk"), many=True).data)

    def _listing(self, request):
        study = _study_param(request)
        return study, self.filter_queryset(self.get_queryset().filter(study=study))

    @extend_schema(parameters=[STUDY], responses={(200, "application/pdf"): FILE})
    @action(detail=False, methods=["get"], url_path="listing-pdf")
    def listing_pdf(self, request):
        """The ICH E3 10.2 listing of the deviations you see (the filters apply), as PDF."""
        study, rows = self._listing(request)
        return _file(listing_pdf(study=study, deviations=rows), "application/pdf",
                     f"{study.protocol_id}-deviations.pdf")

    @extend_schema(parameters=[STUDY], responses={
        (200, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"): FILE})
    @action(detail=False, methods=["get"], url_path="listing-xlsx")
    def listing_xlsx(self, request):
        """The same listing as an Excel workbook (listing and summary sheets)."""
        study, rows = self._listing(request)
        return _file(listing_xlsx(study=study, deviations=rows),
                     "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                     f"{study.protocol_id}-deviations.xlsx")

    @extend_schema(parameters=[STUDY], responses={(200, "application/x-sas-xport"): FILE}, filters=False)
    @action(detail=False, methods=["get"], url_path="sdtm-dv", filterset_class=None)
    def sdtm_dv(self, request):
        """The study's SDTM DV domain (SAS transport v5), for study-wide roles."""
        study = _study_param(request, capability="read_study_deviations")
        return _file(dv_bytes(study=study), "application/x-sas-xport", "dv.xpt")

    @extend_schema(request=None, parameters=[STUDY], responses={202: RunAcceptedSerializer}, filters=False)
    @action(detail=False, methods=["post"], filterset_class=None)
    def detect(self, request):
        """Start the data_review workflow (edit checks, then PatternRecognition) on the study."""
        study = _study_param(request)
        if not study_user_can(user=request.user, capability="run_workflow", study=study):
            raise PermissionDenied("Your role may not run PatternRecognition on this study.")
        try:
            run = workflow_start(name="data_review", study_id=study.pk, actor=request.user)
        except (WorkflowRunOverlap, WorkflowCannotStart) as error:
            return error_response(str(error), status_code=status.HTTP_409_CONFLICT)
        return Response({"run": run.pk, "status": run.status}, status=status.HTTP_202_ACCEPTED)


def _file(content: bytes, content_type: str, name: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


class DeviationPlanSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True)

    class Meta:
        model = DeviationPlan
        fields = ["id", "study", "version", "content", "sha256", "filename", "reason", "created_by", "created_at"]
        read_only_fields = fields


class DeviationPlanViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """The studies' deviation plans, every version (study-wide roles)."""

    serializer_class = DeviationPlanSerializer
    filterset_fields = ["study"]

    def get_queryset(self):
        return plan_list(user=self.request.user).order_by("study", "-version")


class RootCauseAnalysisSerializer(serializers.ModelSerializer):
    site_number = serializers.CharField(source="site.number", read_only=True)
    decided_by = serializers.CharField(source="decided_by.username", read_only=True, allow_null=True, default=None)
    decided_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = RootCauseAnalysis
        fields = ["id", "study", "site", "site_number", "category", "period_start", "period_end", "figures",
                  "proposed_root_cause", "rationale", "root_cause", "status", "decision_note", "decided_by",
                  "decided_at", "created_at"]
        read_only_fields = fields


class RootCauseDecisionSerializer(serializers.Serializer):
    accept = serializers.BooleanField()
    reason = serializers.CharField(max_length=1000)
    root_cause = serializers.ChoiceField(choices=RootCause.choices, required=False,
                                         help_text="Another root cause than proposed (an edit)")
    note = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")


class RootCauseAnalysisViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """Recurring patterns with their figures and proposed root cause; `POST {id}/decide/` accepts
    (or edits) or rejects one (data managers, medical monitors)."""

    serializer_class = RootCauseAnalysisSerializer
    filterset_fields = ["study", "site", "status", "category"]

    def get_queryset(self):
        return root_cause_analysis_list(user=self.request.user)

    @extend_schema(request=RootCauseDecisionSerializer, responses={200: RootCauseAnalysisSerializer},
                   filters=False)
    @action(detail=True, methods=["post"])
    def decide(self, request, pk=None):
        analysis = self.get_object()
        if not deviation_user_can(user=request.user, capability="decide_root_cause", site=analysis.site):
            raise PermissionDenied("Your role may not decide root causes.")
        data = _valid(RootCauseDecisionSerializer, request.data)
        analysis = root_cause_decide(analysis=analysis, actor=request.user, accept=data["accept"],
                                     reason=data["reason"], root_cause=data.get("root_cause"), note=data["note"])
        return Response(RootCauseAnalysisSerializer(analysis).data)


class CapaSerializer(serializers.ModelSerializer):
    site_number = serializers.CharField(source="site.number", read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True)
    completed_on = serializers.DateField(read_only=True, allow_null=True)
    effectiveness_checked_at = serializers.DateTimeField(read_only=True, allow_null=True)
    root_cause_analysis = serializers.IntegerField(source="root_cause_analysis_id", read_only=True, allow_null=True)
    is_overdue = serializers.BooleanField(read_only=True)

    class Meta:
        model = Capa
        fields = ["id", "study", "site", "site_number", "category", "root_cause_analysis", "deviations", "title",
                  "corrective_action", "preventive_action", "owner", "due_on", "status", "completed_on",
                  "is_overdue", "effectiveness_window_days", "effectiveness", "effectiveness_figures",
                  "effectiveness_checked_at", "created_at"]
        read_only_fields = fields


class CapaWriteSerializer(serializers.Serializer):
    site = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    category = serializers.ChoiceField(choices=Deviation.Category.choices, required=False)
    root_cause_analysis = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**63 - 1)
    deviations = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
                                       required=False, max_length=1000)
    title = serializers.CharField(max_length=255, required=False)
    corrective_action = serializers.CharField(max_length=8000, required=False)
    preventive_action = serializers.CharField(max_length=8000, required=False)
    owner = serializers.CharField(max_length=150, required=False, help_text="username")
    due_on = serializers.DateField(required=False)
    status = serializers.ChoiceField(choices=Capa.Status.choices, required=False)
    effectiveness_window_days = serializers.IntegerField(min_value=1, max_value=3650, required=False)
    reason = serializers.CharField(max_length=1000)


class CapaViewSet(ApiView, mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """CAPA records of your sites; created and updated (with a reason) by data managers, sponsors,
    CRAs (their sites) and the owner; `POST {id}/check-effectiveness/` measures whether it worked."""

    serializer_class = CapaSerializer
    filterset_fields = ["study", "site", "status", "category", "effectiveness"]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return capa_list(user=self.request.user).prefetch_related("deviations")

    def _owner(self, username: str, site):
        owner = get_user_model().objects.filter(username=username, is_active=True).first()
        if owner is None or not site_list(user=owner).filter(pk=site.pk).exists():
            raise ValidationError_({"owner": ["No such user at this site."]})
        return owner

    @extend_schema(request=CapaWriteSerializer, responses={201: CapaSerializer})
    def create(self, request, *args, **kwargs):
        data = _valid(CapaWriteSerializer, request.data)
        required = ["site", "category", "title", "corrective_action", "preventive_action", "owner", "due_on"]
        missing = [f for f in required if f not in data]
        if missing:
            raise ValidationError_({f: ["This field is required."] for f in missing})
        site = site_list(user=request.user).filter(pk=data["site"]).first()
        if site is None:
            raise ValidationError_({"site": ["No such site."]})
        analysis = None
        if data.get("root_cause_analysis"):
            analysis = root_cause_analysis_list(user=request.user).filter(pk=data["root_cause_analysis"]).first()
            if analysis is None:
                raise ValidationError_({"root_cause_analysis": ["No such analysis."]})
        linked = list(deviation_list(user=request.user).filter(pk__in=data.get("deviations", [])))
        if len(linked) != len(set(data.get("deviations", []))):
            raise ValidationError_({"deviations": ["No such deviation."]})
        capa = capa_create(actor=request.user, site=site, category=data["category"], title=data["title"],
                           corrective_action=data["corrective_action"], preventive_action=data["preventive_action"],
                           owner=self._owner(data["owner"], site), due_on=data["due_on"], reason=data["reason"],
                           deviations=linked, root_cause_analysis=analysis,
                           effectiveness_window_days=data.get("effectiveness_window_days", 90))
        return Response(CapaSerializer(capa).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=CapaWriteSerializer, responses={200: CapaSerializer})
    def partial_update(self, request, *args, **kwargs):
        capa = self.get_object()
        data = _valid(CapaWriteSerializer, request.data)
        changes = {k: data[k] for k in ("title", "corrective_action", "preventive_action", "due_on", "status",
                                        "effectiveness_window_days") if k in data}
        if "owner" in data:
            changes["owner"] = self._owner(data["owner"], capa.site)
        capa = capa_update(capa=capa, actor=request.user, reason=data["reason"], **changes)
        return Response(CapaSerializer(capa).data)

    @extend_schema(request=None, responses={200: CapaSerializer}, filters=False)
    @action(detail=True, methods=["post"], url_path="check-effectiveness")
    def check_effectiveness(self, request, pk=None):
        capa = self.get_object()
        if not (capa.owner_id == request.user.pk
                or deviation_user_can(user=request.user, capability="manage_capa", site=capa.site)):
            raise PermissionDenied("Your role may not check CAPAs at this site.")
        return Response(CapaSerializer(capa_effectiveness_check(capa=capa, actor=request.user)).data)


class ComplianceReportSerializer(serializers.ModelSerializer):
    signed_by = serializers.CharField(source="signed_by.username", read_only=True, allow_null=True, default=None)
    signed_at = serializers.DateTimeField(read_only=True, allow_null=True)
    is_signed = serializers.BooleanField(read_only=True)

    class Meta:
        model = ComplianceReport
        fields = ["id", "study", "period_start", "period_end", "inputs", "summary", "sha256", "created_at",
                  "is_signed", "signed_by", "signed_name", "signed_at", "signature_meaning"]
        read_only_fields = fields


class SignSerializer(serializers.Serializer):
    password = serializers.CharField(max_length=256, style={"input_type": "password"},
                                     help_text="Your password: signing re-authenticates you")
    meaning = serializers.ChoiceField(choices=[(m, m) for m in SIGNATURE_MEANINGS])


class ComplianceReportViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """The periodic deviation summaries (ComplianceReporting) of your studies; `POST {id}/sign/`
    signs one off (data managers, sponsors; password and meaning)."""

    serializer_class = ComplianceReportSerializer
    filterset_fields = ["study"]

    def get_queryset(self):
        return compliance_report_list(user=self.request.user)

    @extend_schema(request=SignSerializer, responses={200: ComplianceReportSerializer}, filters=False)
    @action(detail=True, methods=["post"])
    def sign(self, request, pk=None):
        report = self.get_object()
        data = _valid(SignSerializer, request.data)
        report = compliance_report_sign(report=report, actor=request.user, password=data["password"],
                                        meaning=data["meaning"])
        return Response(ComplianceReportSerializer(report).data)
