"""The experiment, run and job serializers write their rows by hand (issue #20: DRF's
per-field path was a third of the list's CPU); their output must stay, byte for byte, what
DRF's field-by-field path writes from the same declared fields, on every kind of row."""
from datetime import datetime, timezone as dt_timezone
from types import SimpleNamespace

import pytest
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from controlplane.experiments import actions
from controlplane.experiments.models import Experiment, Job, Run
from controlplane.experiments.serializers import (
    ExperimentSerializer,
    JobSerializer,
    RunSerializer,
)
from controlplane.experiments.views import ExperimentViewSet, RunViewSet
from tests.controlplane.experiments.test_list_queries import fill

pytestmark = pytest.mark.django_db


class FieldByFieldJob(JobSerializer):
    def to_representation(self, instance):
        return serializers.ModelSerializer.to_representation(self, instance)


class FieldByFieldRun(RunSerializer):
    job = FieldByFieldJob(read_only=True, allow_null=True)
    jobs = FieldByFieldJob(many=True, read_only=True, source="jobs_by_rank")

    def to_representation(self, instance):
        return serializers.ModelSerializer.to_representation(self, instance)


class FieldByFieldExperiment(ExperimentSerializer):
    runs = FieldByFieldRun(many=True, read_only=True, source="runs_in_order")

    def to_representation(self, instance):
        return serializers.ModelSerializer.to_representation(self, instance)


def world(api, owner, device_factory, experiment_factory) -> None:
    """Rows of every kind: running, queued (positions, a holder, degraded and offline devices),
    baselines, distributed runs placed and waiting for busy devices, failed with an error and
    a result, a rerun with provenance, a job whose device was deleted, non-ASCII text."""
    fill(owner, device_factory, experiment_factory, devices=2)
    cloud = device_factory(owner, name="cloud ☁", profile="a6000-server").device
    edges = [device_factory(owner, name=f"edge-{i}", profile="jetson-nx").device for i in (1, 2)]
    body = {"algorithm": "fedavg", "config": {"rounds": 2, "workers": 3, "dataset": "digits"},
            "execution": "distributed"}
    for name, devices in (("placed", [cloud, *edges]), ("waits", [cloud, edges[0]])):
        response = api(owner).post("/api/v1/experiments/", {
            **body, "name": name, "devices": [str(d.id) for d in devices]}, format="json")
        assert response.status_code == 201, response.json()
    actions.allocate_gangs()
    assert Run.objects.exclude(waiting_for=[]).exists()

    host = device_factory(owner).device
    failed = experiment_factory(owner, host, preset="local-3", name="résumé ✓ \u2028 line")
    job = Job.objects.get(run__experiment=failed)
    actions.start_job(job, {"code_version": "git:abc", "python": "3.11", "packages": {}})
    actions.finish_job(Job.objects.get(pk=job.pk), "failed", "boom: ü\nTraceback",
                       {"accuracy": 0.5, "nested": {"ü": [1, 2.5, None]}})
    actions.rerun_experiment(owner, Experiment.objects.get(pk=failed.pk))
    gone = device_factory(owner).device
    experiment_factory(owner, gone, preset="local-3", name="orphan")
    gone.delete()
    assert Job.objects.filter(device__isnull=True).exists()


def rendered(serializer) -> bytes:
    return JSONRenderer().render(serializer.data)


def test_rows_written_by_hand_equal_drfs_field_by_field_rows(api, owner, device_factory,
                                                             experiment_factory):
    world(api, owner, device_factory, experiment_factory)
    request = SimpleNamespace(user=owner)
    now = datetime(2031, 1, 2, 3, 4, 5, 678901, tzinfo=dt_timezone.utc)
    experiments = ExperimentViewSet(request=request).get_queryset()
    runs = RunViewSet(request=request).get_queryset()
    assert Experiment.objects.filter(status="running").exists()

    def same(lean, by_field, many: bool, instance) -> None:
        mine = rendered(lean(instance, many=many, context={"now": now}))
        theirs = rendered(by_field(instance, many=many, context={"now": now}))
        assert mine == theirs

    same(ExperimentSerializer, FieldByFieldExperiment, True, list(experiments))
    same(RunSerializer, FieldByFieldRun, True, list(runs))
    for experiment in experiments:
        same(ExperimentSerializer, FieldByFieldExperiment, False, experiment)
    for run in runs:
        same(RunSerializer, FieldByFieldRun, False, run)
    # The page as served is the hand-written rows (durations aside: measured to the
    # response's own now).
    page = api(owner).get("/api/v1/experiments/?page_size=500").json()["results"]
    expected = ExperimentSerializer(list(experiments), many=True, context={"now": now}).data
    for served, row in zip(page, expected, strict=True):
        assert {**served, "duration_s": 0} == {**_plain(row), "duration_s": 0}


def _plain(data):
    import json

    return json.loads(JSONRenderer().render(data))

