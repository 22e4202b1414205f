"""POST /api/v1/experiments/: validation, runs and jobs, hosting device, dispatch."""
import base64
import json

import pytest
from django.db import transaction
from rest_framework.test import APIRequestFactory

from controlplane.experiments import actions
from controlplane.experiments.actions import create_experiment
from controlplane.experiments.models import Experiment, Job, Run
from controlplane.experiments.serializers import ExperimentCreateSerializer
EXPERIMENTS = "/api/v1/experiments/"

#: A small, valid FedAvg config (validation only: nothing trains in these tests).
FEDAVG = {"rounds": 2, "workers": 2, "dataset": "digits"}


def body(**changes):
    return {"name": "fedavg on digits", "algorithm": "fedavg", "config": dict(FEDAVG), **changes}


@pytest.mark.django_db
class TestExperimentCreate:
    def test_it_creates_one_run_and_job_per_method(self, api, owner, device_factory):
        host = device_factory(owner).device
        response = api(owner).post(EXPERIMENTS, body(seed=7))
        assert response.status_code == 201, response.json()
        created = response.json()
        experiment = Experiment.objects.get(pk=created["id"])
        assert (experiment.owner, experiment.status, experiment.seed) == (owner, "running", 7)
        assert experiment.methods == ["fedavg"]
        assert experiment.config["rounds"] == 2 and experiment.config["seed"] == 7
        [run] = created["runs"]
        assert (run["method"], run["state"], run["config"]) == ("fedavg", "queued",
                                                                experiment.config)
        job = Job.objects.get(run_id=run["id"])
        assert (job.device, job.state) == (host, "queued")
        assert run["job"]["id"] == str(job.id) and run["job"]["device"] == str(host.id)

    def test_it_fills_defaults_from_the_methods_schema(self, api, owner, device_factory):
        device_factory(owner)
        created = api(owner).post(EXPERIMENTS, body(config={})).json()
        assert created["config"]["rounds"] == 20  # FedAvg's default
        assert created["testbed"] == "jetson80"

    def test_it_runs_the_baselines_with_the_shared_keys(self, api, owner, device_factory,
                                                        method_with_baseline):
        device_factory(owner)
        baseline = method_with_baseline.baselines[0]
        response = api(owner).post(EXPERIMENTS, {
            "name": "with baseline", "algorithm": method_with_baseline.name,
            "baselines": [baseline], "config": {"rounds": 3}})
        assert response.status_code == 201, response.json()
        runs = response.json()["runs"]
        assert [run["method"] for run in runs] == [method_with_baseline.name, baseline]
        assert runs[1]["config"]["rounds"] == 3
        assert Job.objects.count() == 2

    @pytest.mark.parametrize("config, field", [
        ({"rounds": 0}, "rounds"),
        ({"rounds": "many"}, "rounds"),
        ({"lr": -1}, "lr"),
        ({"dataset": "imagenet-22k"}, "dataset"),
        ({"roundz": 3}, "roundz"),
    ])
    def test_it_rejects_a_bad_config_naming_the_field(self, api, owner, device_factory,
                                                      config, field):
        device_factory(owner)
        response = api(owner).post(EXPERIMENTS, body(config=config))
        assert response.status_code == 400
        assert field in response.json()["config"]
        assert not Experiment.objects.exists() and not Job.objects.exists()

    def test_it_rejects_an_unknown_algorithm(self, api, owner, device_factory):
        device_factory(owner)
        response = api(owner).post(EXPERIMENTS, body(algorithm="fedsgd-9000"))
        assert response.status_code == 400
        assert "fedavg" in response.json()["algorithm"][0]  # lists the known ones

    def test_it_rejects_an_unknown_baseline(self, api, owner, device_factory):
        device_factory(owner)
        response = api(owner).post(EXPERIMENTS, body(baselines=["centralised-sgd"]))
        assert response.status_code == 400
        assert "centralised-sgd" in response.json()["baselines"][0]
        assert not Experiment.objects.exists()

    @pytest.mark.parametrize("payload, field", [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"seed": -1}, "seed"),
        ({"config": [1, 2]}, "config"),
        ({"baselines": "fedavg"}, "baselines"),
        ({"devices": []}, "devices"),
        ({"devices": ["not-a-uuid"]}, "devices"),
        ({"host": "not-a-uuid"}, "host"),
        ({"colour": "blue"}, "colour"),
    ])
    def test_it_rejects_bad_fields(self, api, owner, device_factory, payload, field):
        device_factory(owner)
        response = api(owner).post(EXPERIMENTS, body(**payload))
        assert response.status_code == 400
        assert field in response.json()
        assert not Experiment.objects.exists()

    def test_it_rejects_malformed_json(self, api, owner):
        response = api(owner).post(EXPERIMENTS, '{"name": ', content_type="application/json")
        assert response.status_code == 400
        assert "JSON parse error" in response.json()["detail"]

    def test_it_builds_the_testbed_from_registered_devices(self, api, owner, device_factory):
        edge = device_factory(owner, name="nx-1", profile="jetson-nx",
                              overrides={"uplink_mbps": 7}).device
        cloud = device_factory(owner, name="server", profile="a6000-server").device
        response = api(owner).post(EXPERIMENTS, body(devices=[str(edge.id), str(cloud.id)]))
        assert response.status_code == 201, response.json()
        testbed = response.json()["testbed"]
        assert [(d["profile"], d["name"]) for d in testbed] == [("jetson-nx", "nx-1"),
                                                               ("a6000-server", "server")]
        assert testbed[0]["uplink_mbps"] == 7
        assert response.json()["runs"][0]["config"]["testbed"] == testbed

    def test_it_names_devices_when_they_make_no_valid_testbed(self, api, owner, device_factory):
        only_edge = device_factory(owner, profile="jetson-nx").device
        response = api(owner).post(EXPERIMENTS, body(devices=[str(only_edge.id)]))
        assert response.status_code == 400
        assert "devices" in response.json()

    def test_it_takes_a_preset(self, api, owner, device_factory):
        device_factory(owner)
        created = api(owner).post(EXPERIMENTS, body(preset="jetson30-a6000")).json()
        assert created["testbed"] == "jetson30-a6000"

    def test_it_rejects_an_unknown_preset(self, api, owner, device_factory):
        device_factory(owner)
        response = api(owner).post(EXPERIMENTS, body(preset="moon-base"))
        assert response.status_code == 400
        assert "jetson80" in response.json()["preset"][0]

    def test_it_rejects_other_tenants_devices(self, api, owner, outsider, device_factory):
        device_factory(owner)
        theirs = device_factory(outsider).device
        response = api(owner).post(EXPERIMENTS, body(devices=[str(theirs.id)]))
        assert response.status_code == 400
        assert str(theirs.id) in response.json()["devices"][0]
        assert not Experiment.objects.exists()

    def test_it_rejects_another_tenants_host(self, api, owner, outsider, device_factory):
        device_factory(owner)
        theirs = device_factory(outsider).device
        response = api(owner).post(EXPERIMENTS, body(host=str(theirs.id)))
        assert response.status_code == 400
        assert "host" in response.json()

    def test_it_rejects_an_offline_host(self, api, owner, device_factory):
        offline = device_factory(owner, online=False).device
        response = api(owner).post(EXPERIMENTS, body(host=str(offline.id)))
        assert response.status_code == 400
        assert "offline" in response.json()["host"][0]

    def test_it_needs_an_online_device(self, api, owner, outsider, device_factory):
        device_factory(owner, online=False)
        device_factory(outsider)  # someone else's online device is no help
        response = api(owner).post(EXPERIMENTS, body())
        assert response.status_code == 400
        assert "agents run" in response.json()["host"][0]

    def test_it_prefers_an_idle_cloud_device_as_host(self, api, owner, device_factory,
                                                     experiment_factory):
        device_factory(owner, name="a-edge", profile="jetson-nx")
        busy = device_factory(owner, name="b-cloud", profile="h100").device
        idle = device_factory(owner, name="c-cloud", profile="h100").device
        actions.start_job(Job.objects.get(run__experiment=experiment_factory(owner, host=busy)))
        created = api(owner).post(EXPERIMENTS, body()).json()
        assert created["runs"][0]["job"]["device"] == str(idle.id)

    def test_it_falls_back_to_an_edge_device(self, api, owner, device_factory):
        edge = device_factory(owner, profile="jetson-nx").device
        created = api(owner).post(EXPERIMENTS, body()).json()
        assert created["runs"][0]["job"]["device"] == str(edge.id)

    def test_it_refuses_anonymous_users(self, api):
        assert api().post(EXPERIMENTS, body()).status_code == 401

    def test_it_refuses_devices(self, api, owner, device_factory):
        agent = device_factory(owner)
        assert api(device=agent.credential).post(EXPERIMENTS, body()).status_code == 403
        assert not Experiment.objects.exists()


def queued_messages(redis_client, device) -> list[dict]:
    """The Celery messages waiting on the device's queue (a Redis list named after it)."""
    return [json.loads(raw) for raw in redis_client.lrange(f"device.{device.id}", 0, -1)]


@pytest.mark.django_db(transaction=True)
class TestDispatch:
    def test_it_sends_each_job_to_its_devices_queue_after_commit(
            self, api, owner, device_factory, redis_client):
        host = device_factory(owner).device
        request = APIRequestFactory().post("/")
        request.user = owner
        serializer = ExperimentCreateSerializer(data=body(), context={"request": request})
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            experiment = create_experiment(owner, serializer.validated_data["plan"])
            assert queued_messages(redis_client, host) == []  # nothing before commit

        [message] = queued_messages(redis_client, host)
        job = Job.objects.get(run__experiment=experiment)
        assert message["content-type"] == "application/json"
        assert message["headers"]["task"] == "estuary.run_job"
        assert message["headers"]["id"] == job.celery_task_id
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert (args, kwargs) == ([], {"job_id": str(job.id)})

    def test_it_sends_nothing_when_the_transaction_rolls_back(
            self, api, owner, device_factory, redis_client):
        host = device_factory(owner).device
        with pytest.raises(RuntimeError), transaction.atomic():
            api(owner).post(EXPERIMENTS, body())
            raise RuntimeError("roll back")
        assert not Run.objects.exists()
        assert queued_messages(redis_client, host) == []

    def test_it_dispatches_through_the_api(self, api, owner, device_factory, redis_client):
        host = device_factory(owner).device
        created = api(owner).post(EXPERIMENTS, body()).json()
        [message] = queued_messages(redis_client, host)
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert kwargs == {"job_id": created["runs"][0]["job"]["id"]}
