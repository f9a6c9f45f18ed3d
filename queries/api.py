"""API v1 for queries (read for now; the lifecycle comes with the QueryTracker)."""

from rest_framework import serializers, viewsets

from config.api import FilterSet
from queries.models import Query, QueryMessage
from queries.selectors import query_list


class QueryMessageSerializer(serializers.ModelSerializer):
    author = serializers.SerializerMethodField()

    class Meta:
        model = QueryMessage
        fields = ["id", "kind", "author", "text", "created_at"]

    def get_author(self, message) -> str:
        return message.author.username if message.author_id else message.author_name


class QuerySerializer(serializers.ModelSerializer):
    site_number = serializers.CharField(source="site.number", read_only=True)
    subject_id = serializers.CharField(source="subject.subject_id", read_only=True)
    messages = QueryMessageSerializer(many=True, read_only=True)

    class Meta:
        model = Query
        fields = ["id", "study", "site", "site_number", "subject", "subject_id", "data_point", "origin", "rule_code",
                  "category", "severity", "state", "recipient", "text", "due_date", "created_at", "answered_at",
                  "closed_at", "messages"]


class QueryFilter(FilterSet):
    class Meta:
        model = Query
        fields = ["study", "site", "subject", "data_point", "state", "category", "severity", "recipient", "origin"]


class QueryViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = QuerySerializer
    filterset_class = QueryFilter

    def get_queryset(self):
        return query_list(user=self.request.user).prefetch_related("messages__author")
