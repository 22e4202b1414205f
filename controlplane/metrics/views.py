"""Run metrics and logs: agents post to them, owners read them."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.auth import IsDevice
from controlplane.experiments.models import Run
from controlplane.experiments.queries import HostedRun, hosted_run, runs_for
from controlplane.metrics import actions, downsample
from controlplane.metrics.exports import StepsCSVRenderer, step_rows
from controlplane.metrics.serializers import (POINT_FIELDS, IngestResultSerializer,
                                              LogBatchSerializer, LogQuerySerializer,
                                              LogsSerializer, MetricBatchSerializer,
                                              SeriesQuerySerializer, SeriesSerializer)
from controlplane.parsers import BoundedJSONParser

HOSTING_ONLY = "Only the device hosting this run may report on it."
#: Most recent log lines returned by one GET.
MAX_LOG_LINES_PER_READ = 5000


class NonFiniteJSONParser(BoundedJSONParser):
    """Parses NaN and Infinity too (nesting still bounded), so the serializer can name the
    point that holds one as ``{"points": {"3": {"value": [...]}}}``."""

    allow_non_finite = True


class RunReportView(APIView):
    """GET for the run's owner; POST only for the device hosting the run."""

    #: Agents' reports are the hot path: served on the database lane (controlplane.asgi_http).
    persistent_db_methods = frozenset({"POST"})

    def get_permissions(self):
        return [IsDevice()] if self.request.method == "POST" else [IsAuthenticated()]

    def hosted_run(self, request: Request, run_id) -> HostedRun:
        """The run, with whether the reporting device's jobs of it are finished (read before
        the batch is stored: its agent must stop)."""
        # Any run not hosted by this device is refused alike, existing or not.
        run = hosted_run(request.auth, run_id)
        if run is None:
            raise PermissionDenied(HOSTING_ONLY)
        return run

    def owned_run(self, request: Request, run_id) -> Run:
        return get_object_or_404(runs_for(request.user), pk=run_id)


class RunMetricsView(RunReportView):
    parser_classes = [NonFiniteJSONParser]
    renderer_classes = [JSONRenderer, StepsCSVRenderer]

    @extend_schema(parameters=[SeriesQuerySerializer, OpenApiParameter(
        "format", str, enum=["json", "csv"],
        description="csv: one row per point (run, method, name, step, value, sim_time_s, "
                    "wall_time_s)")], responses=SeriesSerializer)
    def get(self, request: Request, run_id) -> Response:
        """The run's points ordered by name and step (``?name=``, ``?since_step=``, a step range
        ``?from_step=&to_step=``, and ``?buckets=N`` to downsample as the live view does)."""
        run = self.owned_run(request, run_id)
        query = SeriesQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        from_step = params.get("from_step")
        if "since_step" in params:
            from_step = max(from_step or 0, params["since_step"] + 1)
        if request.accepted_renderer.format == "csv":
            # An export is every point of the range, never downsampled.
            points = run.points.all()
            if "name" in params:
                points = points.filter(name=params["name"])
            if from_step is not None:
                points = points.filter(step__gte=from_step)
            if params.get("to_step") is not None:
                points = points.filter(step__lte=params["to_step"])
            response = Response({"run": str(run.id), "points": step_rows(points)})
            response["Content-Disposition"] = f'attachment; filename="estuary-run-{run.id}.csv"'
            return response
        rows, downsampled = downsample.points_by_run(
            [run.pk], params.get("buckets", downsample.UNLIMITED), params.get("name"),
            from_step, params.get("to_step"))
        points = [dict(zip(POINT_FIELDS, row)) for row in rows.get(str(run.pk), [])]
        return Response({"run": str(run.id), "points": points,
                         "downsampled": downsampled.get(str(run.pk), [])})

    @extend_schema(request=MetricBatchSerializer, responses=IngestResultSerializer)
    def post(self, request: Request, run_id) -> Response:
        """A batch of at most 5,000 points; idempotent on (run, name, step)."""
        try:
            batch = MetricBatchSerializer(data=request.data)
            batch.is_valid(raise_exception=True)
        except Exception:
            # Refused first, whatever is wrong with its body, if the device does not host the
            # run (default deny); a good batch's hosting check is part of its store (one round
            # trip on PostgreSQL).
            self.hosted_run(request, run_id)
            raise
        points = batch.validated_data["points"]
        run = actions.ingest_for_device(request.auth, run_id, points)
        if run is None:
            raise PermissionDenied(HOSTING_ONLY)
        return Response({"accepted": len(points),
                         "cancelled": run.stopped})


class RunLogsView(RunReportView):
    @extend_schema(parameters=[LogQuerySerializer], responses=LogsSerializer)
    def get(self, request: Request, run_id) -> Response:
        """The run's latest log lines in order (``?after=<line id>`` for newer ones)."""
        run = self.owned_run(request, run_id)
        query = LogQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        lines = run.logs.all()
        if "after" in query.validated_data:
            lines = lines.filter(id__gt=query.validated_data["after"])
        latest = list(lines.order_by("-id").values("id", "line", "created")
                      [:MAX_LOG_LINES_PER_READ])
        return Response({"run": str(run.id), "lines": latest[::-1]})

    @extend_schema(request=LogBatchSerializer, responses=IngestResultSerializer)
    def post(self, request: Request, run_id) -> Response:
        """Consecutive lines numbered from ``first_seq``; idempotent on (run, seq)."""
        run = self.hosted_run(request, run_id)
        batch = LogBatchSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        lines = batch.validated_data["lines"]
        actions.append_logs(run, batch.validated_data["first_seq"], lines)
        return Response({"accepted": len(lines),
                         "cancelled": run.stopped})
