"""API v1 for protocol deviations (read for now)."""

import django_filters
from rest_framework import serializers, viewsets

from config.api import ApiView, FilterSet
from deviations.models import Deviation
from deviations.selectors import deviation_list


class DeviationSerializer(serializers.ModelSerializer):
    site_number = serializers.CharField(source="site.number", read_only=True)
    subject_id = serializers.CharField(source="subject.subject_id", read_only=True, default=None, allow_null=True)

    class Meta:
        model = Deviation
        fields = ["id", "study", "site", "site_number", "subject", "subject_id", "category", "term", "importance",
                  "status", "source", "description", "occurred_on", "detected_on", "closed_on", "created_at"]


class DeviationFilter(FilterSet):
    occurred_after = django_filters.DateFilter(field_name="occurred_on", lookup_expr="gte")
    occurred_before = django_filters.DateFilter(field_name="occurred_on", lookup_expr="lte")

    class Meta:
        model = Deviation
        fields = ["study", "site", "subject", "category", "importance", "status", "source"]


class DeviationViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = DeviationSerializer
    filterset_class = DeviationFilter

    def get_queryset(self):
        return deviation_list(user=self.request.user)
