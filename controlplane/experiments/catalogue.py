"""``GET /api/v1/algorithms/``: the methods an experiment can run, from ``ml.registry``."""
from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.generics import GenericAPIView
from rest_framework.views import APIView

from controlplane.pagination import FilteredListMixin, ListQuerySerializer

from ml import registry


class AlgorithmSerializer(serializers.Serializer):
    """``Method.describe()``: what the new-experiment form is built from."""

    name = serializers.CharField()
    family = serializers.CharField()
    paper = serializers.CharField()
    summary = serializers.CharField()
    baselines = serializers.ListField(child=serializers.CharField())
    metrics = serializers.ListField(child=serializers.CharField())
    metric_info = serializers.DictField(
        child=serializers.DictField(), help_text=(
            "Per metric: label, unit (fraction, bytes, s, ms, count, flops, bytes/token, "
            "tokens or empty), description, higher_is_better (ml/metrics_catalogue.py)"))
    defaults = serializers.DictField()
    schema = serializers.DictField(help_text="JSON schema of the method's config")
    distributed = serializers.BooleanField(
        help_text="Whether its roles run on several devices with execution 'distributed'")
    single_device = serializers.BooleanField(
        help_text="A method without roles: with execution 'distributed' it runs whole on one "
                  "device (host, else the first listed)")


class AlgorithmListView(FilteredListMixin, GenericAPIView):
    """The catalogue, by name, paginated like every list."""

    serializer_class = AlgorithmSerializer
    query_serializer_class = ListQuerySerializer

    def get_queryset(self) -> list[dict]:
        return [method.describe() for method in registry.all_methods()]

    @extend_schema(parameters=[ListQuerySerializer])
    def get(self, request: Request) -> Response:
        return self.list(request)


class AlgorithmDetailView(APIView):
    @extend_schema(responses=AlgorithmSerializer)
    def get(self, request: Request, name: str) -> Response:
        try:
            return Response(registry.get(name).describe())
        except registry.UnknownMethod:
            raise Http404(f"No algorithm named {name!r}.") from None
