"""Distributed experiments in the control plane: validation, placement, gang allocation, the
claim deadline, run state from its jobs, and the rendezvous endpoints (in-process; the runs
themselves on real agents are in tests/agents/test_distributed.py)."""
import base64
import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.experiments import actions, gang
from controlplane.experiments.models import Experiment, Job, Run
from ml import distributed
from tests.controlplane.experiments.test_create import queued_messages

EXPERIMENTS = "/api/v1/experiments/"
FEDAVG = {"rounds": 2, "workers": 3, "dataset": "digits"}


def body(devices, **changes):
    return {"name": "distributed fedavg", "algorithm": "fedavg", "config": dict(FEDAVG),
            "execution": "distributed", "devices": [str(d.id) for d in devices], **changes}


@pytest.fixture
def testbed(owner, device_factory):
    """A cloud device and two edge devices of ``owner``, online."""
    cloud = device_factory(owner, name="cloud", profile="a6000-server")
    edges = [device_factory(owner, name=f"edge-{i}", profile="jetson-nx") for i in (1, 2)]
    return cloud, edges


def create(api, owner, devices, **changes) -> dict:
    response = api(owner).post(EXPERIMENTS, body(devices, **changes), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def start(api, enrolled, job_id):
    return api(device=enrolled.credential).post(f"/api/v1/agents/jobs/{job_id}/start/", {},
                                                 format="json")


@pytest.mark.django_db
class TestCreate:
    def test_it_places_the_roles_and_stores_the_emulated_twin(self, api, owner, testbed):
        cloud, (edge1, edge2) = testbed
        created = create(api, owner, [cloud.device, edge1.device, edge2.device])
        assert created["execution"] == "distributed"
        [run] = created["runs"]
        assert run["placement"] == [
            {"role": "coordinator", "rank": 0, "device": str(cloud.device.id), "name": "cloud",
             "workers": []},
            {"role": "worker", "rank": 1, "device": str(edge1.device.id), "name": "edge-1",
             "workers": [0, 2]},
            {"role": "worker", "rank": 2, "device": str(edge2.device.id), "name": "edge-2",
             "workers": [1]}]
        stored = Run.objects.get(pk=run["id"])
        slots = [distributed.Slot.from_dict(slot) for slot in stored.placement]
        assert stored.config["testbed"] == distributed.testbed_of(slots)
        assert [job["rank"] for job in run["jobs"]] == [0, 1, 2]
        assert [job["device"] for job in run["jobs"]] == [str(cloud.device.id),
                                                          str(edge1.device.id),
                                                          str(edge2.device.id)]
        assert run["job"]["rank"] == 0
        # The per-run secret never leaves the control plane's agents' answers.
        assert stored.rendezvous_prefix and stored.rendezvous_prefix not in str(created)

    def test_without_devices_it_uses_the_owners_online_devices(self, api, owner, testbed,
                                                               device_factory):
        device_factory(owner, name="edge-offline", profile="jetson-nx", online=False)
        response = api(owner).post(EXPERIMENTS, {
            "name": "d", "algorithm": "fedavg", "config": dict(FEDAVG),
            "execution": "distributed"}, format="json")
        assert response.status_code == 201, response.json()
        names = [slot["name"] for slot in response.json()["runs"][0]["placement"]]
        assert names == ["cloud", "edge-1", "edge-2"]

    def test_a_device_enrolled_as_another_kind_than_its_profile_plays_its_own_kind(
            self, api, owner, testbed, device_factory):
        _, (edge1, edge2) = testbed
        orin = device_factory(owner, name="orin-as-cloud", profile="jetson-agx-orin",
                              overrides={"kind": "cloud"})
        created = create(api, owner, [orin.device, edge1.device, edge2.device])
        [run] = created["runs"]
        assert [(s["role"], s["name"]) for s in run["placement"]] == [
            ("coordinator", "orin-as-cloud"), ("worker", "edge-1"), ("worker", "edge-2")]
        stored = Run.objects.get(pk=run["id"])
        # The emulated twin's server is the same device, as a cloud device.
        assert stored.config["testbed"][0]["kind"] == "cloud"
        assert "kind" not in stored.config["testbed"][1]
        from ml.testbed import resolve_testbed
        assert resolve_testbed(stored.config["testbed"]).server.name == "orin-as-cloud"

    def test_baselines_are_placed_too(self, api, owner, testbed):
        cloud, edges = testbed
        created = create(api, owner, [cloud.device, *[e.device for e in edges]],
                         algorithm="splitfed", baselines=["fedavg"])
        assert [run["method"] for run in created["runs"]] == ["splitfed", "fedavg"]
        assert all(len(run["placement"]) == 3 for run in created["runs"])

    def test_cross_region_regions_are_cloud_devices(self, api, owner, testbed, device_factory):
        coordinator, edges = testbed
        regions = [device_factory(owner, name=f"region-{i}", profile="h100",
                                  overrides={"uplink_mbps": 100.0}) for i in (1, 2)]
        created = create(api, owner, [coordinator.device, *(e.device for e in edges),
                                      *(r.device for r in regions)],
                         algorithm="cocodc", config={"workers": 2, "rounds": 1,
                                                     "inner_steps": 4, "fragments": 2},
                         baselines=["diloco"])
        for run in created["runs"]:
            assert [(slot["role"], slot["name"], slot["workers"]) for slot in run["placement"]] \
                == [("coordinator", "cloud", []), ("worker", "region-1", [0]),
                    ("worker", "region-2", [1])]
            stored = Run.objects.get(pk=run["id"])
            assert [entry["name"] for entry in stored.config["testbed"]] == ["region-1",
                                                                             "region-2"]
        response = api(owner).post(EXPERIMENTS, body(
            [coordinator.device, *(e.device for e in edges)], algorithm="diloco",
            config={"workers": 2}), format="json")
        assert response.status_code == 400
        assert "cloud device for its coordinator and at least one more" in \
            response.json()["devices"][0]

    def test_a_single_device_method_runs_whole_on_its_host_and_says_so(self, api, owner,
                                                                      testbed):
        cloud, (edge1, edge2) = testbed
        devices = [cloud.device, edge1.device, edge2.device]
        created = create(api, owner, devices, algorithm="comp", config={"model_size": "tiny"},
                         baselines=["llm-pruner"], host=str(edge2.device.id))
        for run in created["runs"]:
            [slot] = run["placement"]
            assert (slot["rank"], slot["name"], slot["workers"]) == (0, "edge-2", [])
            assert [job["device"] for job in run["jobs"]] == [str(edge2.device.id)]
            stored = Run.objects.get(pk=run["id"])
            # Its emulated clock is the device it runs on.
            assert [entry["name"] for entry in stored.config["testbed"]] == ["edge-2"]
        # Without host: the first listed device.
        created = create(api, owner, [edge1.device, cloud.device], algorithm="imb-nas",
                         config={"dataset": "digits"})
        assert [slot["name"] for slot in created["runs"][0]["placement"]] == ["edge-1"]

    @pytest.mark.parametrize("case, field", [
        ("host-not-listed", "host"), ("host-with-roles", "host"), ("no-cloud", "devices"),
        ("no-edge", "devices"), ("preset", "preset"), ("execution", "execution")])
    def test_bad_input_is_a_400_naming_the_field_and_creates_nothing(
            self, api, owner, testbed, device_factory, case, field):
        cloud, (edge1, edge2) = testbed
        devices = [cloud.device, edge1.device, edge2.device]
        elsewhere = device_factory(owner, name="elsewhere", profile="jetson-nx")
        assert not distributed.supports_distributed("comp")
        request = {
            "host-not-listed": body(devices, algorithm="comp", config={},
                                    host=str(elsewhere.device.id)),
            "host-with-roles": body(devices, host=str(cloud.device.id)),
            "no-cloud": body([edge1.device, edge2.device]),
            "no-edge": body([cloud.device]),
            "preset": {**body(devices), "preset": "local-3", "devices": None},
            "execution": body(devices, execution="sideways"),
        }[case]
        request = {k: v for k, v in request.items() if v is not None}
        response = api(owner).post(EXPERIMENTS, request, format="json")
        assert response.status_code == 400, response.json()
        assert field in response.json(), response.json()
        assert not Experiment.objects.exists() and not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_its_jobs_are_sent_together_once_all_devices_are_free(api, owner, testbed,
                                                              redis_client):
    cloud, (edge1, edge2) = testbed
    created = create(api, owner, [cloud.device, edge1.device, edge2.device])
    run = Run.objects.get(pk=created["runs"][0]["id"])
    assert run.allocated_at is not None  # allocated when the creation committed
    for job in Job.objects.filter(run=run).select_related("device"):
        assert job.dispatched_at is not None
        [message] = queued_messages(redis_client, job.device)
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert kwargs == {"job_id": str(job.id)}


@pytest.mark.django_db
class TestGang:
    def test_a_run_waits_for_busy_devices_and_says_which(self, api, owner, testbed):
        cloud, (edge1, edge2) = testbed
        devices = [cloud.device, edge1.device, edge2.device]
        first = uuid.UUID(create(api, owner, devices)["runs"][0]["id"])
        second = uuid.UUID(create(api, owner, [cloud.device, edge1.device])["runs"][0]["id"])
        assert actions.allocate_gangs() == [first]
        assert not gang.try_allocate(second, actions.dispatch_job)
        waiting = api(owner).get(f"/api/v1/runs/{second}/").json()["waiting_for"]
        assert {w["name"] for w in waiting} == {"cloud", "edge-1"}
        assert all(w["why"] == "busy with another job" for w in waiting)
        # No partial hold: the waiting run took none of its devices.
        assert not Job.objects.filter(run_id=second, dispatched_at__isnull=False).exists()

        # The first run ends: the second is allocated at once (on the job's end).
        for job in Job.objects.filter(run_id=first):
            actions.start_job(job)
        for job in Job.objects.filter(run_id=first).order_by("-rank"):
            actions.finish_job(job, "succeeded", "", {"final": {"accuracy": 0.5}})
        run = Run.objects.get(pk=first)
        assert run.state == "succeeded" and run.result == {"final": {"accuracy": 0.5}}
        assert actions.allocate_gangs() == [second]
        assert Run.objects.get(pk=second).waiting_for == []

    @pytest.mark.parametrize("patience_s, small_starts", [(3600, True), (0, False)])
    def test_a_run_that_waited_too_long_reserves_its_devices_against_younger_runs(
            self, api, owner, testbed, device_factory, settings, patience_s, small_starts):
        settings.ESTUARY = {**settings.ESTUARY, "GANG_RESERVE_AFTER_S": patience_s}
        cloud, (edge1, edge2) = testbed
        cloud2 = device_factory(owner, name="cloud-2", profile="a6000-server")
        first = uuid.UUID(create(api, owner, [cloud.device, edge1.device])["runs"][0]["id"])
        assert actions.allocate_gangs() == [first]
        big = uuid.UUID(create(api, owner, [cloud.device, edge1.device,
                                            edge2.device])["runs"][0]["id"])
        small = uuid.UUID(create(api, owner, [cloud2.device, edge2.device])["runs"][0]["id"])
        # The small run's devices are free; it overtakes the big one only while the big one
        # has not waited past the patience.
        assert actions.allocate_gangs() == ([small] if small_starts else [])
        if not small_starts:
            [waiting] = Run.objects.get(pk=small).waiting_for
            assert waiting["name"] == "edge-2"
            assert waiting["why"].startswith("reserved for an older run")
            assert not Job.objects.filter(run_id=small, dispatched_at__isnull=False).exists()
        assert {w["name"] for w in Run.objects.get(pk=big).waiting_for} == {"cloud", "edge-1"}

    def test_an_emulated_job_on_a_device_holds_the_gang_back(
            self, api, owner, testbed, experiment_factory):
        cloud, (edge1, edge2) = testbed
        experiment_factory(owner, host=cloud.device, config={"rounds": 1, "dataset": "digits"},
                           preset="local-3")
        run = create(api, owner, [cloud.device, edge1.device, edge2.device])["runs"][0]["id"]
        assert actions.allocate_gangs() == []
        assert [w["name"] for w in Run.objects.get(pk=run).waiting_for] == ["cloud"]

    def test_a_device_that_misses_the_claim_deadline_fails_the_run_naming_it(
            self, api, owner, testbed, settings):
        cloud, (edge1, edge2) = testbed
        run_id = create(api, owner, [cloud.device, edge1.device, edge2.device])["runs"][0]["id"]
        actions.allocate_gangs()
        jobs = {job.rank: job for job in Job.objects.filter(run_id=run_id)}
        assert start(api, cloud, jobs[0].id).status_code == 200
        assert start(api, edge1, jobs[1].id).status_code == 200
        assert actions.fail_unclaimed_gang_jobs() == []  # within the deadline
        Job.objects.filter(pk=jobs[2].pk).update(
            dispatched_at=timezone.now() - timedelta(
                seconds=settings.ESTUARY["GANG_CLAIM_DEADLINE_S"] + 1))
        assert actions.fail_unclaimed_gang_jobs() == [jobs[2].id]
        run = Run.objects.get(pk=run_id)
        assert run.state == "failed" and "edge-2" in run.error and "claim" in run.error
        states = dict(Job.objects.filter(run_id=run_id).values_list("rank", "state"))
        assert states == {0: "cancelled", 1: "cancelled", 2: "failed"}
        assert Experiment.objects.get(pk=run.experiment_id).status == "failed"
        # The others are told to stop with their next heartbeat.
        answer = api(device=edge1.credential).post(
            "/api/v1/agents/heartbeat/", {"running_jobs": [str(jobs[1].id)]}, format="json")
        assert answer.json()["cancel_jobs"] == [str(jobs[1].id)]


@pytest.mark.django_db
class TestRankFailureAndCancel:
    @pytest.fixture
    def running(self, api, owner, testbed):
        cloud, (edge1, edge2) = testbed
        run_id = create(api, owner, [cloud.device, edge1.device, edge2.device])["runs"][0]["id"]
        actions.allocate_gangs()
        jobs = {job.rank: job for job in Job.objects.filter(run_id=run_id)}
        for rank, enrolled in enumerate([cloud, edge1, edge2]):
            assert start(api, enrolled, jobs[rank].id).status_code == 200
        return run_id, jobs

    def test_a_failed_rank_fails_the_run_naming_its_device(self, running):
        run_id, jobs = running
        actions.finish_job(jobs[0], "failed", "PeerLost: rank 2 (device edge-2) stopped "
                                               "answering: timeout", {})
        run = Run.objects.get(pk=run_id)
        assert run.state == "failed" and "edge-2" in run.error and "rank 0" in run.error
        assert set(Job.objects.filter(run_id=run_id).values_list("state", flat=True)) == {
            "failed", "cancelled"}
        # A rank that reports afterwards changes nothing.
        actions.finish_job(Job.objects.get(pk=jobs[1].pk), "cancelled", "", {})
        assert Run.objects.get(pk=run_id).state == "failed"

    def test_cancel_cancels_every_rank(self, api, owner, running):
        run_id, jobs = running
        experiment = Run.objects.get(pk=run_id).experiment_id
        answer = api(owner).post(f"{EXPERIMENTS}{experiment}/cancel/")
        assert answer.json()["cancelled_jobs"] == 3
        assert set(Job.objects.filter(run_id=run_id).values_list("state", flat=True)) == {
            "cancelled"}
        assert Run.objects.get(pk=run_id).state == "cancelled"


@pytest.mark.django_db
class TestRendezvous:
    def test_ranks_get_their_rendezvous_only_from_their_own_jobs(self, api, owner, testbed,
                                                                 device_factory):
        cloud, (edge1, edge2) = testbed
        api(device=cloud.credential).post("/api/v1/agents/heartbeat/", {
            "running_jobs": [], "advertise_address": "10.0.0.7"}, format="json")
        run_id = create(api, owner, [cloud.device, edge1.device, edge2.device])["runs"][0]["id"]
        actions.allocate_gangs()
        jobs = {job.rank: job for job in Job.objects.filter(run_id=run_id)}
        prefix = Run.objects.get(pk=run_id).rendezvous_prefix

        spec = start(api, cloud, jobs[0].id).json()
        assert (spec["execution"], spec["rank"], spec["world_size"]) == ("distributed", 0, 3)
        assert [slot["rank"] for slot in spec["placement"]] == [0, 1, 2]
        assert spec["rendezvous"] == {"host": "10.0.0.7", "port": 0, "prefix": prefix,
                                      "timeout_s": pytest.approx(spec["rendezvous"]["timeout_s"])}
        worker = start(api, edge1, jobs[1].id).json()
        assert worker["rank"] == 1 and worker["rendezvous"] is None
        url = f"/api/v1/agents/jobs/{jobs[1].id}/rendezvous/"
        assert api(device=edge1.credential).get(url).json()["rendezvous"] is None

        # Only the coordinator reports the port; only a job's own device reads it.
        assert api(device=edge1.credential).post(
            url, {"port": 29500}, format="json").status_code == 409
        coordinator = f"/api/v1/agents/jobs/{jobs[0].id}/rendezvous/"
        for bad in (0, 70000, "x"):
            assert api(device=cloud.credential).post(
                coordinator, {"port": bad}, format="json").status_code == 400
        assert api(device=cloud.credential).post(
            coordinator, {"port": 29500}, format="json").status_code == 200
        answer = api(device=edge1.credential).get(url).json()["rendezvous"]
        assert (answer["host"], answer["port"], answer["prefix"]) == ("10.0.0.7", 29500, prefix)
        assert api(device=edge2.credential).get(url).status_code == 404
        stranger = device_factory(owner, name="stranger", profile="jetson-nx")
        assert api(device=stranger.credential).get(url).status_code == 404
        assert api(owner).get(url).status_code in (401, 403)

        actions.cancel_experiment(Run.objects.get(pk=run_id).experiment)
        assert api(device=edge1.credential).get(url).status_code == 409

    def test_an_agent_reports_where_it_is_reached(self, api, owner, testbed):
        cloud, _ = testbed
        bad = api(device=cloud.credential).post("/api/v1/agents/heartbeat/", {
            "advertise_address": "http://x:1/"}, format="json")
        assert bad.status_code == 400 and "advertise_address" in bad.json()
        api(device=cloud.credential).post("/api/v1/agents/heartbeat/", {
            "advertise_address": "edge.lan"}, format="json")
        device = api(owner).get(f"/api/v1/devices/{cloud.device.id}/").json()
        assert device["advertise_address"] == "edge.lan"
