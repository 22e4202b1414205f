"""POST /api/v1/agents/heartbeat/ and the status derived from heartbeats."""
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from controlplane.devices.models import Device
from controlplane.experiments import actions
from controlplane.experiments.models import Job

HEARTBEAT = "/api/v1/agents/heartbeat/"


def silence(device: Device, heartbeats: float) -> None:
    """Pretend the device's last heartbeat was ``heartbeats`` intervals ago."""
    interval = settings.ESTUARY["HEARTBEAT_INTERVAL_S"]
    device.last_seen = timezone.now() - timedelta(seconds=heartbeats * interval)
    device.save(update_fields=["last_seen"])


@pytest.mark.django_db
class TestHeartbeat:
    def test_it_marks_the_device_online(self, api, owner, device_factory):
        agent = device_factory(owner)
        silence(agent.device, 10)
        response = api(device=agent.credential).post(HEARTBEAT, {"running_jobs": []})
        assert response.status_code == 200
        assert response.json() == {"cancel_jobs": []}
        agent.device.refresh_from_db()
        assert agent.device.status() == "online"

    def test_it_lists_jobs_to_stop(self, api, owner, device_factory, experiment_factory):
        agent = device_factory(owner)
        experiment = experiment_factory(owner, host=agent.device)
        job = Job.objects.get(run__experiment=experiment)
        actions.start_job(job)
        stray = uuid.uuid4()
        answer = api(device=agent.credential).post(
            HEARTBEAT, {"running_jobs": [str(job.id), str(stray)]}).json()
        assert answer == {"cancel_jobs": [str(stray)]}

        actions.cancel_experiment(experiment)
        answer = api(device=agent.credential).post(
            HEARTBEAT, {"running_jobs": [str(job.id)]}).json()
        assert answer == {"cancel_jobs": [str(job.id)]}

    def test_it_tells_other_devices_to_stop_a_job(self, api, owner, device_factory,
                                                  experiment_factory):
        host, other = device_factory(owner), device_factory(owner)
        job = Job.objects.get(run__experiment=experiment_factory(owner, host=host.device))
        answer = api(device=other.credential).post(
            HEARTBEAT, {"running_jobs": [str(job.id)]}).json()
        assert answer == {"cancel_jobs": [str(job.id)]}

    def test_it_rejects_bad_job_ids(self, api, owner, device_factory):
        agent = device_factory(owner)
        response = api(device=agent.credential).post(HEARTBEAT, {"running_jobs": ["nope"]})
        assert response.status_code == 400
        assert "running_jobs" in response.json()

    def test_it_refuses_anonymous_requests(self, api):
        assert api().post(HEARTBEAT, {}).status_code == 401

    def test_it_refuses_a_bad_credential(self, api):
        assert api(device="not-a-credential").post(HEARTBEAT, {}).status_code == 401

    def test_it_refuses_user_tokens(self, api, owner):
        assert api(owner).post(HEARTBEAT, {}).status_code == 403


@pytest.mark.django_db
class TestDeviceStatus:
    def test_it_is_online_after_a_heartbeat(self, owner, device_factory):
        assert device_factory(owner).device.status() == "online"

    def test_it_is_offline_after_three_missed_heartbeats(self, owner, device_factory):
        device = device_factory(owner).device
        silence(device, 2.5)
        assert device.status() == "online"
        silence(device, 3.5)
        assert device.status() == "offline"

    def test_it_is_offline_before_any_heartbeat(self, owner, device_factory):
        assert device_factory(owner, online=False).device.status() == "offline"

    def test_it_is_busy_while_hosting_a_running_job(self, api, owner, device_factory,
                                                    experiment_factory):
        agent = device_factory(owner)
        job = Job.objects.get(run__experiment=experiment_factory(owner, host=agent.device))
        assert agent.device.status() == "online"  # queued is not busy
        actions.start_job(job)
        assert agent.device.status() == "busy"
        listed = api(owner).get("/api/v1/devices/").json()["results"]
        assert [d["status"] for d in listed] == ["busy"]


@pytest.mark.django_db
class TestWorkerState:
    """The heartbeat's ``worker``: an agent whose worker does not consume its queue."""

    DEAF = {"consuming": False,
            "detail": "broker unreachable since 2026-01-01T00:00:00+00:00: Connection refused"}

    def test_it_shows_the_device_degraded_with_the_reason(self, api, owner, device_factory,
                                                          experiment_factory):
        agent = device_factory(owner)
        experiment = experiment_factory(owner, host=agent.device)
        response = api(device=agent.credential).post(
            HEARTBEAT, {"running_jobs": [], "worker": self.DEAF})
        assert response.status_code == 200

        device = api(owner).get(f"/api/v1/devices/{agent.device.id}/").json()
        assert device["status"] == "degraded"
        assert device["status_detail"] == f"The agent is not taking jobs: {self.DEAF['detail']}."
        # The experiment says why its job waits.
        job = api(owner).get(f"/api/v1/experiments/{experiment.id}/").json()["runs"][0]["job"]
        assert job["state"] == "queued"
        assert job["waiting_reason"] == device["status_detail"]

    def test_it_is_online_again_once_the_worker_consumes(self, api, owner, device_factory):
        agent = device_factory(owner)
        client = api(device=agent.credential)
        client.post(HEARTBEAT, {"running_jobs": [], "worker": self.DEAF})
        client.post(HEARTBEAT, {"running_jobs": [], "worker": {"consuming": True}})
        device = api(owner).get(f"/api/v1/devices/{agent.device.id}/").json()
        assert (device["status"], device["status_detail"]) == ("online", "")

    def test_a_heartbeat_without_it_counts_as_consuming(self, api, owner, device_factory):
        agent = device_factory(owner)
        client = api(device=agent.credential)
        client.post(HEARTBEAT, {"running_jobs": [], "worker": self.DEAF})
        client.post(HEARTBEAT, {"running_jobs": []})
        agent.device.refresh_from_db()
        assert agent.device.status() == "online"

    def test_offline_wins_over_degraded(self, api, owner, device_factory):
        agent = device_factory(owner)
        api(device=agent.credential).post(HEARTBEAT, {"running_jobs": [], "worker": self.DEAF})
        agent.device.refresh_from_db()
        silence(agent.device, 3.5)
        assert agent.device.status() == "offline"
        assert agent.device.status_detail().startswith("The agent is offline")

    @pytest.mark.parametrize("worker", [{"detail": "x"}, {"consuming": "maybe"},
                                        {"consuming": False, "detail": "x" * 501},
                                        {"consuming": False, "extra": 1}, "deaf"])
    def test_it_rejects_a_bad_worker_state(self, api, owner, device_factory, worker):
        agent = device_factory(owner)
        response = api(device=agent.credential).post(
            HEARTBEAT, {"running_jobs": [], "worker": worker})
        assert response.status_code == 400
        assert "worker" in response.json()
        agent.device.refresh_from_db()
        assert agent.device.worker_consuming


@pytest.mark.django_db
class TestResourceUse:
    """The heartbeat's ``resources`` (agents/resources.py), and what the device list shows."""

    def test_it_shows_the_agents_load_its_job_with_role_and_queue_depth(
            self, api, owner, device_factory, experiment_factory):
        from agents.resources import resource_usage

        agent = device_factory(owner)
        first = experiment_factory(owner, host=agent.device, name="first")
        experiment_factory(owner, host=agent.device, name="second")
        actions.start_job(Job.objects.get(run__experiment=first))
        usage = resource_usage()  # this machine's, as a real agent sends it
        assert 0 <= usage["cpu_percent"] <= 100 and 0 < usage["memory_total_mib"]
        usage["gpus"] = [{"name": "NVIDIA H100", "memory_used_mib": 9000,
                          "memory_total_mib": 81559, "utilization_percent": 80.0}]
        response = api(device=agent.credential).post(
            HEARTBEAT, {"running_jobs": [], "resources": usage}, format="json")
        assert response.status_code == 200, response.json()

        device = api(owner).get(f"/api/v1/devices/{agent.device.id}/").json()
        assert device["resources"] == usage
        assert device["queue_depth"] == 1
        assert [(j["experiment_name"], j["method"], j["role"])
                for j in device["current_jobs"]] == [("first", "fedavg", "all roles (emulated)")]
        # A heartbeat without it keeps the last reported use.
        api(device=agent.credential).post(HEARTBEAT, {"running_jobs": []})
        assert api(owner).get(f"/api/v1/devices/{agent.device.id}/").json()["resources"] == usage

    def test_the_list_costs_the_same_queries_for_any_number_of_busy_devices(
            self, api, owner, device_factory, experiment_factory):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        def busy_device(i: int) -> None:
            agent = device_factory(owner, name=f"busy-{i}")
            running = experiment_factory(owner, host=agent.device, name=f"running-{i}")
            experiment_factory(owner, host=agent.device, name=f"queued-{i}")
            actions.start_job(Job.objects.get(run__experiment=running))

        def list_queries() -> tuple[int, list[dict]]:
            with CaptureQueriesContext(connection) as queries:
                devices = api(owner).get("/api/v1/devices/").json()["results"]
            return len(queries), devices

        busy_device(0)
        few, _ = list_queries()
        for i in range(1, 6):
            busy_device(i)
        many, devices = list_queries()
        assert many == few, (few, many)
        assert len(devices) == 6
        assert all(d["queue_depth"] == 1 and len(d["current_jobs"]) == 1 for d in devices)

    @pytest.mark.parametrize("resources", [{"cpu_percent": 101}, {"cpu_percent": "high"},
                                           {"gpus": [{"name": "x"}]}, {"load": 1}])
    def test_it_rejects_bad_resource_use(self, api, owner, device_factory, resources):
        agent = device_factory(owner)
        response = api(device=agent.credential).post(
            HEARTBEAT, {"running_jobs": [], "resources": resources}, format="json")
        assert response.status_code == 400
        assert "resources" in response.json()
