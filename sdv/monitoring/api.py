"""API v1 of the monitoring plan: `GET /api/v1/monitoring-visits/?study=ID` (filters site,
site_number, monitor (username), kind, status, date_from, date_to) and the actions
`POST /api/v1/monitoring-visits/{id}/confirm|move|cancel|complete/`. Read through the scoped
selector (a visit outside the caller's scope is a 404); the actions are for the visit's monitor,
the CRAs of its site and the study's sponsors / study managers (403 for other readers)."""

import django_filters
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from config.api import ApiView, FilterSet, IntegerFilter, error_response
from config.schema import ErrorSerializer
from sdv.monitoring import selectors, services
from sdv.monitoring.models import Monitor, MonitoringVisit


class MonitoringVisitSerializer(serializers.ModelSerializer):
    site_number = serializers.CharField(source="site.number")
    monitor = serializers.CharField(source="monitor.user.username")
    monitor_name = serializers.CharField(source="monitor.name")
    trip = serializers.IntegerField(source="trip_id", allow_null=True)
    end_date = serializers.SerializerMethodField()
    plan_version = serializers.IntegerField(source="plan.version")

    class Meta:
        model = MonitoringVisit
        fields = ["id", "site_number", "monitor", "date", "kind", "trip", "travel_km", "status", "reason", "study",
                  "site", "monitor_name", "end_date", "days", "locked", "plan_version"]

    def get_end_date(self, visit) -> str:
        import datetime

        return (visit.date + datetime.timedelta(days=visit.days - 1 if visit.kind == "on_site" else 0)).isoformat()


class MonitoringVisitFilter(FilterSet):
    study = IntegerFilter(field_name="study_id")
    site = IntegerFilter(field_name="site_id")
    site_number = django_filters.CharFilter(field_name="site__number")
    monitor = django_filters.CharFilter(field_name="monitor__user__username", help_text="the monitor's username")
    kind = django_filters.ChoiceFilter(choices=MonitoringVisit.Kind.choices)
    status = django_filters.ChoiceFilter(choices=MonitoringVisit.Status.choices)
    date_from = django_filters.DateFilter(field_name="date", lookup_expr="gte")
    date_to = django_filters.DateFilter(field_name="date", lookup_expr="lte")
    trip = IntegerFilter(field_name="trip_id")

    class Meta:
        model = MonitoringVisit
        fields = ["study", "site", "site_number", "monitor", "kind", "status", "date_from", "date_to", "trip"]


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000, required=False, allow_blank=True)


class CancelSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000)


class MoveSerializer(serializers.Serializer):
    date = serializers.DateField()
    monitor = serializers.CharField(max_length=150, required=False, help_text="username of another monitor")
    reason = serializers.CharField(max_length=1000)


ERRORS = {400: OpenApiResponse(ErrorSerializer, description="refused: the message says why (a move names the "
                                                             "constraint it breaks)")}


class MonitoringVisitViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """Monitoring visits: `?study=ID` and filters `site`, `site_number`, `monitor` (username), `kind`
    (on_site | remote), `status` (planned | confirmed | done | cancelled), `date_from`, `date_to`.
    `trip` is shared by the visits of one trip; `travel_km` is the visit's leg (the trip's legs sum
    to its travel; the last visit of a trip carries the way home)."""

    serializer_class = MonitoringVisitSerializer
    filterset_class = MonitoringVisitFilter

    def get_queryset(self):
        return selectors.monitoring_visit_list(user=self.request.user).order_by("date", "monitor__user__username",
                                                                                 "site__number", "id")

    def _manageable(self):
        visit = self.get_object()
        if not selectors.visit_manageable(user=self.request.user, visit=visit):
            raise PermissionDenied("Only the visit's monitor, the CRAs of its site and the study's sponsors may "
                                   "change a visit.")
        return visit

    @staticmethod
    def _data(serializer_class, data) -> dict:
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def _done(self, visit) -> Response:
        visit = selectors.monitoring_visit_list(user=self.request.user).get(pk=visit.pk)
        return Response(MonitoringVisitSerializer(visit).data)

    @extend_schema(request=ReasonSerializer, responses={200: MonitoringVisitSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def confirm(self, request, pk=None):
        visit = self._manageable()
        data = self._data(ReasonSerializer, request.data)
        return self._done(services.monitoring_visit_confirm(visit=visit, actor=request.user,
                                                            reason=data.get("reason") or "Confirmed with the site"))

    @extend_schema(request=ReasonSerializer, responses={200: MonitoringVisitSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None):
        visit = self._manageable()
        data = self._data(ReasonSerializer, request.data)
        return self._done(services.monitoring_visit_complete(visit=visit, actor=request.user,
                                                             reason=data.get("reason") or "Visit done"))

    @extend_schema(request=CancelSerializer, responses={200: MonitoringVisitSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        visit = self._manageable()
        data = self._data(CancelSerializer, request.data)
        return self._done(services.monitoring_visit_cancel(visit=visit, actor=request.user, reason=data["reason"]))

    @extend_schema(request=MoveSerializer, responses={200: MonitoringVisitSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def move(self, request, pk=None):
        visit = self._manageable()
        data = self._data(MoveSerializer, request.data)
        monitor = None
        if data.get("monitor"):
            monitor = Monitor.objects.filter(study_id=visit.study_id, user__username=data["monitor"]).first()
            if monitor is None:
                return error_response(f"No monitor {data['monitor']!r} in this study's plan.", constraint="countries")
        try:
            moved = services.monitoring_visit_move(visit=visit, date=data["date"], monitor=monitor,
                                                   actor=request.user, reason=data["reason"])
        except services.MoveRefused as exc:
            return error_response(exc.message_text, status_code=status.HTTP_400_BAD_REQUEST,
                                  constraint=exc.constraint, breaches=exc.breaches)
        return self._done(moved)
