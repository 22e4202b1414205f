"""Experiment, run and agent-job endpoints: thin wrappers around queries and actions."""
from __future__ import annotations

from typing import Any

from django.db.models import Exists, F, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import Coalesce, Lower, Now
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.auth import IsDevice, IsOwner
from controlplane.conditional import ConditionalGetMixin
from controlplane.errors import Conflict
from controlplane.experiments import actions
from controlplane.experiments.models import (
    FINISHED_STATES,
    Execution,
    Experiment,
    Job,
    JobState,
    Run,
)
from controlplane.experiments.queries import experiments_for, jobs_for_device, runs_for
from controlplane.experiments.reads import CachedListMixin, KeptPages
from controlplane.experiments.results import ResultsCSVRenderer, final_values
from controlplane.experiments.serializers import (
    CancelResultSerializer,
    ExperimentCreateSerializer,
    ExperimentSerializer,
    ResultsSerializer,
    RunSerializer,
    StepsSerializer,
)
from controlplane.fields import JSONObjectField, StrictSerializer
from controlplane.metrics.exports import StepsCSVRenderer, step_rows
from controlplane.metrics.models import MetricPoint
from controlplane.pagination import ListQuerySerializer
from controlplane.schema import CONFLICT, error_response
from ml import registry


def known_method(name: str) -> str:
    """A filter's method name must be in the catalogue (a typo is an error, not an empty list)."""
    try:
        return registry.get(name).name
    except registry.UnknownMethod:
        raise serializers.ValidationError(f"Unknown method {name!r}.") from None


#: ``?ordering=`` of experiment lists: a field, "-" for descending. Ties break by id.
EXPERIMENT_ORDERINGS = {
    "created": "created", "name": Lower("name"), "status": "status",
    "algorithm": "algorithm", "duration": "duration",
}


class ExperimentQuerySerializer(ListQuerySerializer):
    status = serializers.ChoiceField(choices=Experiment.Status.choices, required=False)
    algorithm = serializers.CharField(max_length=63, required=False, validators=[known_method])
    method = serializers.CharField(max_length=63, required=False, validators=[known_method],
                                   help_text="Experiments with a run of this method")
    name = serializers.CharField(max_length=200, required=False,
                                 help_text="Experiments whose name contains this (any case)")
    search = serializers.CharField(max_length=200, required=False, help_text=(
        "Experiments whose name, algorithm or a method contains this (any case)"))
    created_after = serializers.DateField(required=False,
                                          help_text="Created on or after this day (UTC)")
    created_before = serializers.DateField(required=False,
                                           help_text="Created on or before this day (UTC)")
    ordering = serializers.ChoiceField(
        required=False, default="-created",
        choices=[f"{sign}{key}" for key in EXPERIMENT_ORDERINGS for sign in ("", "-")],
        help_text="Sort key; '-' first for descending (default -created). duration: from "
                  "creation to the end (or now, while running)")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after and before and after > before:
            raise serializers.ValidationError(
                {"created_before": ["Must be on or after created_after."]})
        return attrs

    def apply(self, queryset: QuerySet, filters: dict[str, Any]) -> QuerySet:
        if "status" in filters:
            queryset = queryset.filter(status=filters["status"])
        if "algorithm" in filters:
            queryset = queryset.filter(algorithm=filters["algorithm"])
        if "method" in filters:
            queryset = queryset.filter(
                Exists(Run.objects.filter(experiment=OuterRef("pk"), method=filters["method"])))
        if "name" in filters:
            queryset = queryset.filter(name__icontains=filters["name"])
        if "search" in filters:
            term = filters["search"]
            queryset = queryset.filter(
                Q(name__icontains=term) | Q(algorithm__icontains=term)
                | Exists(Run.objects.filter(experiment=OuterRef("pk"), method__icontains=term)))
        if "created_after" in filters:
            queryset = queryset.filter(created__date__gte=filters["created_after"])
        if "created_before" in filters:
            queryset = queryset.filter(created__date__lte=filters["created_before"])
        ordering = filters.get("ordering", "-created")
        key = EXPERIMENT_ORDERINGS[ordering.lstrip("-")]
        if key == "duration":
            queryset = queryset.annotate(duration=Coalesce("finished_at", Now()) - F("created"))
        expression = F(key) if isinstance(key, str) else key
        expression = expression.desc() if ordering.startswith("-") else expression.asc()
        return queryset.order_by(expression, "id")


def listed_jobs(lookup: str) -> Prefetch:
    """Prefetch the jobs at ``lookup`` with their devices, as lists (``Run.all_jobs``): one
    query, and no queryset built per run as a prefetched manager needs (issue #20)."""
    return Prefetch(lookup, queryset=Job.objects.select_related("device"), to_attr="listed_jobs")


@extend_schema_view(list=extend_schema(parameters=[ExperimentQuerySerializer]))
class ExperimentViewSet(ConditionalGetMixin, CachedListMixin, mixins.RetrieveModelMixin,
                        viewsets.GenericViewSet):
    """The user's experiments; creating one validates it and dispatches its jobs."""

    serializer_class = ExperimentSerializer
    query_serializer_class = ExperimentQuerySerializer
    lookup_value_converter = "uuid"
    permission_classes = [IsOwner]
    #: Reads (the dashboard polls the list) keep their connections (controlplane.db_lane).
    persistent_db_methods = frozenset({"GET"})
    db_lane = "reads"
    page_cache = KeptPages()

    def cache_key(self, request: Request, query: dict[str, Any]):
        if query.get("ordering", "").lstrip("-") == "duration":
            return None  # the running ones' order changes with time
        return super().cache_key(request, query)

    def running_since(self, experiment: Experiment):
        return experiment.created if experiment.finished_at is None else None

    def get_queryset(self):
        return (experiments_for(self.request.user).select_related("rerun_of")
                .prefetch_related(Prefetch("runs", to_attr="listed_runs"),
                                  listed_jobs("listed_runs__jobs"),
                                  Prefetch("rerun_of__runs", to_attr="listed_runs")))

    @extend_schema(request=ExperimentCreateSerializer, responses={201: ExperimentSerializer})
    def create(self, request: Request) -> Response:
        serializer = ExperimentCreateSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        experiment = actions.create_experiment(request.user, serializer.validated_data["plan"])
        return Response(ExperimentSerializer(self.get_queryset().get(pk=experiment.pk)).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=CancelResultSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        experiment = self.get_object()
        cancelled = actions.cancel_experiment(experiment)
        return Response({"cancelled_jobs": cancelled,
                         "experiment": ExperimentSerializer(self.get_queryset().get(pk=pk)).data})

    @extend_schema(request=None, responses={201: ExperimentSerializer, 400: error_response(
        "No online device of yours can host it (`{\"host\": [...]}`).")})
    @action(detail=True, methods=["post"])
    def rerun(self, request: Request, pk=None) -> Response:
        """A new experiment with this one's methods, configs, seed and testbed."""
        experiment = actions.rerun_experiment(request.user, self.get_object())
        return Response(ExperimentSerializer(self.get_queryset().get(pk=experiment.pk)).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(responses=ResultsSerializer, parameters=[OpenApiParameter(
        "format", str, enum=["json", "csv"], description="csv: one row per run")])
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, ResultsCSVRenderer])
    def results(self, request: Request, pk=None) -> Response:
        experiment = self.get_object()
        response = Response(ResultsSerializer(final_values(experiment)).data)
        if request.accepted_renderer.format == "csv":
            response["Content-Disposition"] = (
                f'attachment; filename="estuary-results-{experiment.id}.csv"')
        return response

    @extend_schema(responses=StepsSerializer, parameters=[OpenApiParameter(
        "format", str, enum=["json", "csv"],
        description="csv: one row per point (run, method, name, step, value, sim_time_s, "
                    "wall_time_s)")])
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, StepsCSVRenderer])
    def points(self, request: Request, pk=None) -> Response:
        """Every point of every run, per step (the results action has final values only)."""
        experiment = self.get_object()
        response = Response({"experiment": str(experiment.id), "name": experiment.name,
                             "points": step_rows(MetricPoint.objects.filter(
                                 run__experiment=experiment))})
        if request.accepted_renderer.format == "csv":
            response["Content-Disposition"] = (
                f'attachment; filename="estuary-points-{experiment.id}.csv"')
        return response


class RunQuerySerializer(ListQuerySerializer):
    experiment = serializers.UUIDField(required=False)
    state = serializers.ChoiceField(choices=JobState.choices, required=False)
    method = serializers.CharField(max_length=63, required=False, validators=[known_method])
    name = serializers.CharField(max_length=200, required=False,
                                 help_text="Runs of experiments whose name contains this")

    def apply(self, queryset: QuerySet, filters: dict[str, Any]) -> QuerySet:
        if "experiment" in filters:
            queryset = queryset.filter(experiment_id=filters["experiment"])
        if "state" in filters:
            queryset = queryset.filter(state=filters["state"])
        if "method" in filters:
            queryset = queryset.filter(method=filters["method"])
        if "name" in filters:
            queryset = queryset.filter(experiment__name__icontains=filters["name"])
        return queryset.order_by("-experiment__created", "experiment_id", "position")


@extend_schema_view(list=extend_schema(parameters=[RunQuerySerializer]))
class RunViewSet(ConditionalGetMixin, CachedListMixin, mixins.RetrieveModelMixin,
                 viewsets.GenericViewSet):
    """The user's runs (``?experiment=``, ``?state=``, ``?method=``, ``?name=`` narrow them)."""

    serializer_class = RunSerializer
    query_serializer_class = RunQuerySerializer
    lookup_value_converter = "uuid"
    permission_classes = [IsOwner]
    persistent_db_methods = frozenset({"GET"})
    db_lane = "reads"
    page_cache = KeptPages()

    def get_queryset(self):
        return (runs_for(self.request.user).select_related("experiment")
                .prefetch_related(listed_jobs("jobs")))


class AgentProvenanceSerializer(StrictSerializer):
    """What the agent runs a job with (see ``agents/provenance.py``)."""

    code_version = serializers.CharField(max_length=200, help_text=(
        "git:<commit>[+dirty] from a checkout, else 'estuary <package version>'"))
    python = serializers.CharField(max_length=50)
    platform = serializers.CharField(max_length=200, required=False, default="")
    packages = serializers.DictField(child=serializers.CharField(max_length=100),
                                     help_text="Package name to its version")

    def validate_packages(self, packages: dict[str, str]) -> dict[str, str]:
        if len(packages) > 500 or any(len(name) > 100 for name in packages):
            raise serializers.ValidationError("At most 500 packages, names of 100 characters.")
        return packages


class JobStartRequestSerializer(StrictSerializer):
    provenance = AgentProvenanceSerializer(required=False)


class RendezvousSerializer(serializers.Serializer):
    """Where the ranks of a distributed run meet (``ml.distributed.Rendezvous``)."""

    host = serializers.CharField(help_text="The coordinator's agent's advertised address")
    port = serializers.IntegerField(help_text="The store's port; 0 for the coordinator: "
                                              "open one on a free port and report it")
    prefix = serializers.CharField(help_text="The run's secret: every store key lives under it")
    timeout_s = serializers.FloatField()


class JobStartSerializer(serializers.Serializer):
    config = serializers.DictField()
    method = serializers.CharField()
    run_id = serializers.UUIDField()
    execution = serializers.ChoiceField(choices=Execution.choices)
    rank = serializers.IntegerField(help_text="0: the coordinator (emulated: always 0)")
    world_size = serializers.IntegerField()
    placement = serializers.ListField(child=serializers.DictField(), help_text=(
        "Distributed: ml.distributed.Slot.as_dict() per rank; empty for emulated runs"))
    rendezvous = RendezvousSerializer(allow_null=True, help_text=(
        "Distributed: the coordinator's at once, a worker's once the coordinator reported its "
        "port (else null: poll rendezvous/); null for emulated runs"))


class RendezvousPortSerializer(StrictSerializer):
    port = serializers.IntegerField(min_value=1, max_value=65535)


class RendezvousAnswerSerializer(serializers.Serializer):
    state = serializers.CharField(help_text="The job's state")
    rendezvous = RendezvousSerializer(allow_null=True, help_text="null until the coordinator "
                                                                 "reported its store's port")


def start_answer(job) -> dict[str, Any]:
    """``start/``'s answer: what the agent runs, and for a distributed run its rank."""
    run = job.run
    distributed = run.is_distributed
    return {"config": run.config, "method": run.method, "run_id": str(run.id),
            "execution": "distributed" if distributed else "emulated", "rank": job.rank,
            "world_size": len(run.placement) if distributed else 1,
            "placement": run.placement,
            "rendezvous": actions.rendezvous_for(job) if distributed else None}


class JobFinishSerializer(StrictSerializer):
    state = serializers.ChoiceField(choices=["succeeded", "failed", "cancelled"])
    error = serializers.CharField(required=False, default="", allow_blank=True, max_length=20_000,
                                  trim_whitespace=False)
    result = JSONObjectField(required=False, default=dict)


class JobStartView(APIView):
    """The hosting agent starts a job: 200 with its config, 409 if no longer queued."""

    permission_classes = [IsDevice]

    @extend_schema(request=JobStartRequestSerializer,
                   responses={200: JobStartSerializer, 409: CONFLICT})
    def post(self, request: Request, job_id) -> Response:
        job = get_object_or_404(jobs_for_device(request.auth), pk=job_id)
        body = JobStartRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = actions.start_job(job, body.validated_data.get("provenance"))
        return Response(start_answer(job))


class JobRendezvousView(APIView):
    """A distributed run's rendezvous, only for the devices of its jobs: the coordinator's
    agent POSTs its store's port; the workers' agents GET the full rendezvous."""

    permission_classes = [IsDevice]

    @extend_schema(responses={200: RendezvousAnswerSerializer, 409: CONFLICT})
    def get(self, request: Request, job_id) -> Response:
        """409 once the job is finished (its agent must stop waiting)."""
        job = get_object_or_404(jobs_for_device(request.auth).select_related("run"), pk=job_id)
        if job.state in FINISHED_STATES:
            raise Conflict(f"The job is {job.state}.")
        if not job.run.is_distributed:
            raise Conflict("The job is not part of a distributed run.")
        return Response({"state": job.state, "rendezvous": actions.rendezvous_for(job)})

    @extend_schema(request=RendezvousPortSerializer,
                   responses={200: RendezvousAnswerSerializer, 409: CONFLICT})
    def post(self, request: Request, job_id) -> Response:
        job = get_object_or_404(jobs_for_device(request.auth), pk=job_id)
        body = RendezvousPortSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = actions.report_rendezvous_port(job, body.validated_data["port"])
        return Response({"state": job.state, "rendezvous": actions.rendezvous_for(job)})


class JobFinishView(APIView):
    """The hosting agent reports how a job ended."""

    permission_classes = [IsDevice]

    @extend_schema(request=JobFinishSerializer, responses={200: inline_serializer(
        "JobFinished", {"state": serializers.CharField()}), 409: CONFLICT})
    def post(self, request: Request, job_id) -> Response:
        job = get_object_or_404(jobs_for_device(request.auth), pk=job_id)
        body = JobFinishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = actions.finish_job(job, **body.validated_data)
        return Response({"state": job.state})
