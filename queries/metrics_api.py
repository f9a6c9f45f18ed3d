"""`GET /api/v1/query-metrics/?study=ID[&as_of=YYYY-MM-DD]`: the query metrics of one study, over
the queries the user may read (a site user gets their site's). Definitions: queries.metrics."""

import datetime

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import ApiView, IdField
from queries.metrics import query_metrics
from queries.selectors import query_list
from studies.selectors import study_list


class QueryMetricsParams(serializers.Serializer):
    study = IdField()
    as_of = serializers.DateField(required=False, help_text="The day the aging and open SLAs are counted at; "
                                                            "default today (UTC)")


class QueryMetricsView(ApiView, APIView):
    @extend_schema(parameters=[OpenApiParameter("study", int, required=True),
                               OpenApiParameter("as_of", datetime.date)],
                   responses=OpenApiTypes.OBJECT)
    def get(self, request):
        params = QueryMetricsParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        study = study_list(user=request.user).filter(pk=params.validated_data["study"]).first()
        if study is None:
            raise NotFound("No such study.")
        metrics = query_metrics(queries=query_list(user=request.user).filter(study=study),
                                today=params.validated_data.get("as_of"))
        return Response({"study": study.pk, **metrics})
