"""Experiment API shapes. Creation validates every field and each method's config."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from django.db.models.manager import BaseManager
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.devices.queries import devices_for
from controlplane.experiments import placement as placing
from controlplane.experiments.models import Execution, Experiment, Job, Run
from controlplane.experiments.plans import ExperimentPlan, PlannedRun
from controlplane.experiments.queueing import QueueBoard
from controlplane.experiments.results import duration_s
from controlplane.experiments.scheduling import choose_host
from controlplane.fields import RESPONSE_FIELD_MAPPING, JSONObjectField, StrictSerializer
from ml import distributed, registry
from ml.config import ConfigError
from ml.testbed.presets import PRESETS


def _per_response(serializer: serializers.BaseSerializer, key: str, make: Callable[[], Any]):
    """``make()``, once per response: kept in the root serializer's context, which nested
    serializers share."""
    context = serializer.context
    if key not in context:
        context[key] = make()
    return context[key]


def queue_board(serializer: serializers.BaseSerializer) -> QueueBoard:
    """The queue facts shared by every serializer of one response."""
    return _per_response(serializer, "queue_board", QueueBoard)


def response_now(serializer: serializers.BaseSerializer) -> datetime:
    """The instant a response is as of (read once: every running experiment's duration in one
    response is measured to the same now)."""
    return _per_response(serializer, "now", timezone.now)


def response_zone(serializer: serializers.BaseSerializer) -> tzinfo:
    """The active time zone, read once per response (asgiref's lookup per value was a third of
    the list's CPU: issue #20)."""
    return _per_response(serializer, "zone", timezone.get_current_timezone)


def iso_datetime(value: datetime | None, zone: tzinfo) -> str | None:
    """``value`` as DRF's DateTimeField writes it (ISO 8601 in ``zone``, "Z" for UTC), or
    None."""
    if not value:
        return None
    value = value.astimezone(zone) if timezone.is_aware(value) else timezone.make_aware(
        value, zone)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# The experiment, run and job serializers below declare their fields for the API schema and
# write their rows by hand (``to_representation``): the same keys, values and types as DRF's
# field-by-field path (tests/controlplane/experiments/test_lean_serializers.py compares the two,
# byte for byte, on every kind of row), at a fraction of its CPU (issue #20: DRF's per-field
# work was a third of the list's). A field added to ``Meta.fields`` must be added to its row.


class QueueBoardListSerializer(serializers.ListSerializer):
    """A list that reads the queues of all its runs at once, before serializing its rows."""

    def to_representation(self, data) -> list[dict[str, Any]]:
        items = list(data.all() if isinstance(data, BaseManager) else data)
        queue_board(self).load(run for item in items for run in self.child.runs_of(item))
        return super().to_representation(items)


class JobSerializer(serializers.ModelSerializer):
    device_name = serializers.CharField(source="device.name", read_only=True, default=None,
                                        allow_null=True, help_text="null once the device is deleted")
    waiting_reason = serializers.SerializerMethodField(
        help_text="Why a queued job waits (its device is offline or degraded), else empty")

    serializer_field_mapping = RESPONSE_FIELD_MAPPING

    class Meta:
        model = Job
        fields = ["id", "rank", "device", "device_name", "state", "celery_task_id", "queued_at",
                  "dispatched_at", "started_at", "finished_at", "error", "waiting_reason"]
        read_only_fields = fields

    def get_waiting_reason(self, job: Job) -> str:
        return waiting_reason(job, queue_board(self))

    def to_representation(self, job: Job) -> dict[str, Any]:
        return job_row(job, queue_board(self), response_zone(self))


def waiting_reason(job: Job, board: QueueBoard) -> str:
    """Why a queued job waits (its device's own state), else ""."""
    if job.state != Job.State.QUEUED or job.device is None:
        return ""
    return job.device.status_detail(board.cutoff())


def job_row(job: Job, board: QueueBoard, zone: tzinfo) -> dict[str, Any]:
    """:class:`JobSerializer`'s output for ``job``."""
    device = job.device
    return {"id": str(job.id), "rank": job.rank, "device": job.device_id,
            "device_name": None if device is None else device.name, "state": job.state,
            "celery_task_id": job.celery_task_id,
            "queued_at": iso_datetime(job.queued_at, zone),
            "dispatched_at": iso_datetime(job.dispatched_at, zone),
            "started_at": iso_datetime(job.started_at, zone),
            "finished_at": iso_datetime(job.finished_at, zone), "error": job.error,
            "waiting_reason": waiting_reason(job, board)}


class PlacementSlotSerializer(serializers.Serializer):
    role = serializers.CharField(help_text="coordinator or worker")
    rank = serializers.IntegerField()
    device = serializers.UUIDField()
    name = serializers.CharField(help_text="The device's name")
    workers = serializers.ListField(child=serializers.IntegerField(),
                                    help_text="Virtual worker indices this rank hosts")


class WaitingForSerializer(serializers.Serializer):
    device = serializers.UUIDField()
    name = serializers.CharField()
    why = serializers.CharField()


class RunSerializer(serializers.ModelSerializer):
    job = JobSerializer(read_only=True, allow_null=True,
                        help_text="The coordinator's job (rank 0); an emulated run's only job")
    # A declared field, not a method building a JobSerializer per run: its fields are built
    # once per response, not once per run (issue #20's profile of the list).
    jobs = JobSerializer(many=True, read_only=True, source="jobs_by_rank",
                         help_text="One job per rank, rank 0 first")
    placement = serializers.SerializerMethodField(
        help_text="Distributed runs: the rank of each device; empty for emulated runs")
    waiting_for = WaitingForSerializer(many=True, read_only=True, help_text=(
        "A distributed run not yet allocated: the busy devices it waits for"))
    queue_reason = serializers.SerializerMethodField(help_text=(
        "Why a queued run waits: its position in its device's queue, the job holding the "
        "device, the device's own state; empty unless queued"))

    serializer_field_mapping = RESPONSE_FIELD_MAPPING

    class Meta:
        model = Run
        list_serializer_class = QueueBoardListSerializer
        fields = ["id", "experiment", "position", "method", "state", "config", "started_at",
                  "finished_at", "error", "result", "provenance", "job", "jobs", "placement",
                  "waiting_for", "queue_reason"]
        read_only_fields = fields

    @extend_schema_field(PlacementSlotSerializer(many=True))
    def get_placement(self, run: Run) -> list[dict[str, Any]]:
        return placing.public_placement(run.placement)

    def get_queue_reason(self, run: Run) -> str:
        return queue_board(self).reason(run)

    def to_representation(self, run: Run) -> dict[str, Any]:
        board = queue_board(self)
        board.load([run])
        return run_row(run, board, response_zone(self))

    @staticmethod
    def runs_of(run: Run) -> list[Run]:
        """The runs whose queues a list of runs reads at once."""
        return [run]


def _waiting_row(wait: dict[str, Any]) -> dict[str, Any]:
    """:class:`WaitingForSerializer`'s output for one entry."""
    return {key: None if wait[key] is None else str(wait[key])
            for key in ("device", "name", "why")}


def run_row(run: Run, board: QueueBoard, zone: tzinfo) -> dict[str, Any]:
    """:class:`RunSerializer`'s output for ``run`` (its devices' queues read into ``board``)."""
    jobs = [job_row(job, board, zone) for job in run.jobs_by_rank]
    return {"id": str(run.id), "experiment": run.experiment_id, "position": run.position,
            "method": run.method, "state": run.state, "config": run.config,
            "started_at": iso_datetime(run.started_at, zone),
            "finished_at": iso_datetime(run.finished_at, zone), "error": run.error,
            "result": run.result, "provenance": run.provenance,
            # rank 0's row is built once and written twice ("job" and in "jobs")
            "job": jobs[0] if jobs else None, "jobs": jobs,
            "placement": placing.public_placement(run.placement),
            "waiting_for": [_waiting_row(wait) for wait in run.waiting_for],
            "queue_reason": board.reason(run)}


def code_versions(experiment: Experiment) -> set[str]:
    """The code versions its runs' agents recorded (empty before any run started)."""
    return {run.provenance["code_version"] for run in experiment.runs_in_order
            if run.provenance.get("code_version")}


def code_version_differs(experiment: Experiment) -> bool | None:
    """For a rerun: whether its runs ran other code than its original's; None when not a
    rerun, or when either side has not recorded a version yet."""
    original = experiment.rerun_of
    if original is None:
        return None
    mine, theirs = code_versions(experiment), code_versions(original)
    if not mine or not theirs:
        return None
    return mine != theirs


class ExperimentSerializer(serializers.ModelSerializer):
    runs = RunSerializer(many=True, read_only=True, source="runs_in_order")
    duration_s = serializers.SerializerMethodField(
        help_text="Seconds from creation to the end (to now while running)")
    code_version_differs = serializers.SerializerMethodField(help_text=(
        "For a rerun: whether its runs ran other code than its original's runs; null when "
        "not a rerun or not known yet"))

    serializer_field_mapping = RESPONSE_FIELD_MAPPING

    class Meta:
        model = Experiment
        list_serializer_class = QueueBoardListSerializer
        fields = ["id", "name", "algorithm", "config", "methods", "testbed", "seed", "execution",
                  "status", "created", "updated", "finished_at", "duration_s", "rerun_of",
                  "code_version_differs", "runs"]
        read_only_fields = fields

    def get_duration_s(self, experiment: Experiment) -> float:
        return round(duration_s(experiment, response_now(self)), 3)

    @extend_schema_field(serializers.BooleanField(allow_null=True))
    def get_code_version_differs(self, experiment: Experiment) -> bool | None:
        return code_version_differs(experiment)

    def to_representation(self, experiment: Experiment) -> dict[str, Any]:
        board, zone = queue_board(self), response_zone(self)
        runs = experiment.runs_in_order
        board.load(runs)
        return {
            "id": str(experiment.id), "name": experiment.name,
            "algorithm": experiment.algorithm, "config": experiment.config,
            "methods": experiment.methods, "testbed": experiment.testbed,
            "seed": experiment.seed, "execution": experiment.execution,
            "status": experiment.status, "created": iso_datetime(experiment.created, zone),
            "updated": iso_datetime(experiment.updated, zone),
            "finished_at": iso_datetime(experiment.finished_at, zone),
            "duration_s": self.get_duration_s(experiment),
            "rerun_of": experiment.rerun_of_id,
            "code_version_differs": code_version_differs(experiment),
            "runs": [run_row(run, board, zone) for run in runs]}

    @staticmethod
    def runs_of(experiment: Experiment) -> list[Run]:
        """The runs whose queues a list of experiments reads at once."""
        return experiment.runs_in_order


def _config_errors(error: ConfigError, method: str | None = None,
                   testbed_field: str | None = None) -> dict[str, Any]:
    """``{"config": {field: [message]}}``; testbed errors name ``devices`` or ``preset`` when
    the testbed came from there."""
    suffix = f" (for baseline {method})" if method else ""
    errors: dict[str, Any] = {}
    for field, message in error.errors.items():
        if testbed_field and (field == "testbed" or field.startswith("testbed.")):
            errors.setdefault(testbed_field, []).append(message + suffix)
        else:
            errors.setdefault("config", {})[field] = [message + suffix]
    return errors


class ExperimentCreateSerializer(StrictSerializer):
    """``{"name", "algorithm", "config", "baselines", "devices" | "preset", "host", "seed",
    "execution"}``.

    The testbed comes from ``devices`` (the owner's registered devices) or ``preset``, and
    replaces ``config.testbed``; ``seed`` replaces ``config.seed``. Each baseline gets the
    algorithm's validated config restricted to the keys its own schema knows.

    ``execution: "distributed"`` places each run's roles on ``devices`` (else the owner's
    online devices; see :mod:`controlplane.experiments.placement`) and replaces each run's
    ``config.testbed`` by the placement's emulated equivalent, so the emulated twin is exact.
    A single-device method (no roles: ``comp``, ``imb-nas``, ...) runs whole on ``host``, else
    on the first listed device, else on the device an emulated run would take.
    """

    name = serializers.CharField(max_length=200)
    algorithm = serializers.CharField(max_length=63)
    config = JSONObjectField(required=False, default=dict, max_bytes=100_000)
    baselines = serializers.ListField(child=serializers.CharField(max_length=63),
                                      required=False, default=list, max_length=20)
    devices = serializers.ListField(child=serializers.UUIDField(), required=False,
                                    allow_empty=False, max_length=1000)
    preset = serializers.CharField(required=False, max_length=63)
    host = serializers.UUIDField(required=False, allow_null=True)
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    execution = serializers.ChoiceField(choices=Execution.choices, required=False,
                                        default=Execution.EMULATED)

    def run_validation(self, data=serializers.empty):
        """Every error at once: when a top-level field is wrong (an empty name), the config is
        still checked against the algorithm's schema, so ``rounds: -1`` is reported with it."""
        try:
            return super().run_validation(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict) or "config" in exc.detail:
                raise
            more = self._config_errors_alone(data)
            if not more:
                raise
            raise serializers.ValidationError({**exc.detail, **more}) from None

    @staticmethod
    def _config_errors_alone(data: Any) -> dict[str, Any]:
        """The config's own errors under the algorithm's schema (testbed aside: it depends on
        fields that may be the wrong ones), or {} when algorithm or config cannot be read."""
        if not isinstance(data, dict) or not isinstance(data.get("config", {}), dict):
            return {}
        try:
            method = registry.get(data.get("algorithm"))
        except (registry.UnknownMethod, TypeError):
            return {}
        values = {key: value for key, value in data.get("config", {}).items()
                  if key != "testbed"}
        try:
            method.parse_config(values)
        except ConfigError as exc:
            errors = {field: [message] for field, message in exc.errors.items()
                      if field != "testbed" and not field.startswith("testbed.")}
            return {"config": errors} if errors else {}
        return {}

    def validate_algorithm(self, name: str) -> str:
        try:
            registry.get(name)
        except registry.UnknownMethod:
            known = ", ".join(m.name for m in registry.all_methods())
            raise serializers.ValidationError(
                f"Unknown algorithm {name!r}; known: {known}.") from None
        return name

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        user = self.context["request"].user
        method = registry.get(attrs["algorithm"])
        baselines = self._baselines(method, attrs["baselines"])
        testbed = self._testbed(user, attrs)
        testbed_field = "devices" if "devices" in attrs else "preset" if "preset" in attrs else None

        values = dict(attrs["config"])
        if testbed is not None:
            values["testbed"] = testbed
        if "seed" in attrs:
            values["seed"] = attrs["seed"]
        try:
            config = method.parse_config(values).model_dump(mode="json")
        except ConfigError as exc:
            raise serializers.ValidationError(_config_errors(exc, None, testbed_field)) from None

        runs = [PlannedRun(method.name, config)]
        for baseline in baselines:
            known = set(baseline.config.model_fields)
            try:
                restricted = baseline.parse_config(
                    {k: v for k, v in config.items() if k in known})
            except ConfigError as exc:
                raise serializers.ValidationError(
                    _config_errors(exc, baseline.name, testbed_field)) from None
            runs.append(PlannedRun(baseline.name, restricted.model_dump(mode="json")))

        if attrs["execution"] == Execution.DISTRIBUTED:
            return {"plan": self._distributed_plan(user, attrs, method, baselines, runs)}
        return {"plan": ExperimentPlan(
            name=attrs["name"], algorithm=method.name, config=config, runs=runs,
            testbed=config["testbed"], seed=config["seed"],
            host=choose_host(user, attrs.get("host")))}

    def _distributed_plan(self, user, attrs: dict[str, Any], method: registry.Method,
                          baselines: list[registry.Method], runs: list[PlannedRun]
                          ) -> ExperimentPlan:
        single = [m.name for m in [method, *baselines] if not m.distributed]
        if single and len(single) != 1 + len(baselines):
            raise serializers.ValidationError({"baselines": [
                f"{', '.join(single)} run on one device and the others across devices; run "
                "them in separate distributed experiments."]})
        if "preset" in attrs:
            raise serializers.ValidationError({"preset": [
                "A distributed experiment runs on its devices: give devices, not preset."]})
        listed = None
        if "devices" in attrs:
            found = {device.id: device for device in
                     devices_for(user).filter(id__in=attrs["devices"])}
            listed = [found[device_id] for device_id in attrs["devices"]]
        if single:
            coordinator = placing.single_device(user, listed, attrs.get("host"))
            edges = []
        else:
            if attrs.get("host") is not None:
                raise serializers.ValidationError({"host": [
                    "A distributed experiment's coordinator is its first cloud device: give "
                    "devices, not host."]})
            coordinator, edges = placing.distributed_devices(
                user, listed, distributed.worker_kind(method.name))
        placed = []
        for planned, baseline in zip(runs, [method] + baselines):
            slots = placing.place(planned.method, planned.config, coordinator, edges)
            values = {**planned.config, "testbed": placing.testbed_of(slots)}
            try:
                config = baseline.parse_config(values).model_dump(mode="json")
            except ConfigError as exc:
                raise serializers.ValidationError(
                    _config_errors(exc, None if baseline is method else baseline.name,
                                   "devices")) from None
            placed.append(PlannedRun(planned.method, config, slots))
        return ExperimentPlan(
            name=attrs["name"], algorithm=method.name, config=placed[0].config, runs=placed,
            testbed=placed[0].config["testbed"], seed=placed[0].config["seed"],
            host=coordinator, execution=Execution.DISTRIBUTED)

    @staticmethod
    def _baselines(method: registry.Method, names: list[str]) -> list[registry.Method]:
        if len(set(names)) != len(names):
            raise serializers.ValidationError({"baselines": ["A baseline is listed twice."]})
        unknown = [name for name in names if name not in method.baselines]
        if unknown:
            choices = ", ".join(method.baselines) or "none"
            raise serializers.ValidationError({"baselines": [
                f"{', '.join(map(repr, unknown))} is not a baseline of {method.name}; "
                f"choose from: {choices}."]})
        try:
            return [registry.get(name) for name in names]
        except registry.UnknownMethod as exc:
            raise serializers.ValidationError(
                {"baselines": [f"Baseline {exc.args[0]!r} is not in the catalogue."]}) from None

    @staticmethod
    def _testbed(user, attrs: dict[str, Any]) -> str | list[dict[str, Any]] | None:
        if "devices" in attrs and "preset" in attrs:
            raise serializers.ValidationError(
                {"preset": ["Give either devices or preset, not both."]})
        if "preset" in attrs:
            if attrs["preset"] not in PRESETS:
                raise serializers.ValidationError({"preset": [
                    f"Unknown preset {attrs['preset']!r}; known: {', '.join(sorted(PRESETS))}."]})
            return attrs["preset"]
        if "devices" not in attrs:
            return None
        wanted = attrs["devices"]
        if len(set(wanted)) != len(wanted):
            raise serializers.ValidationError({"devices": ["A device is listed twice."]})
        found = {device.id: device for device in devices_for(user).filter(id__in=wanted)}
        missing = [str(device_id) for device_id in wanted if device_id not in found]
        if missing:
            raise serializers.ValidationError(
                {"devices": [f"Unknown device: {device_id}." for device_id in missing]})
        return [found[device_id].testbed_entry() for device_id in wanted]


class CancelResultSerializer(serializers.Serializer):
    cancelled_jobs = serializers.IntegerField()
    experiment = ExperimentSerializer()


class FinalValuesRowSerializer(serializers.Serializer):
    run = serializers.UUIDField()
    method = serializers.CharField()
    state = serializers.CharField()
    final = serializers.DictField(child=serializers.FloatField())


class ResultsSerializer(serializers.Serializer):
    """The final value (highest step) of each metric of each run."""

    experiment = serializers.UUIDField()
    name = serializers.CharField()
    algorithm = serializers.CharField()
    metrics = serializers.ListField(child=serializers.CharField())
    runs = FinalValuesRowSerializer(many=True)


class StepRowSerializer(serializers.Serializer):
    run = serializers.UUIDField()
    method = serializers.CharField()
    name = serializers.CharField()
    step = serializers.IntegerField()
    value = serializers.FloatField()
    sim_time_s = serializers.FloatField()
    wall_time_s = serializers.FloatField()


class StepsSerializer(serializers.Serializer):
    """Every point of an experiment's runs, one row per (run, metric, step)."""

    experiment = serializers.UUIDField()
    name = serializers.CharField()
    points = StepRowSerializer(many=True)
