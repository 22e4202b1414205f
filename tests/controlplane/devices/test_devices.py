"""GET/PATCH/DELETE /api/v1/devices/[{id}/]."""
import pytest

from controlplane.devices.models import Device
from controlplane.experiments import actions
from controlplane.experiments.models import Job

DEVICES = "/api/v1/devices/"


def detail(device) -> str:
    return f"{DEVICES}{device.id}/"


@pytest.mark.django_db
class TestDeviceList:
    def test_it_lists_the_owners_devices(self, api, owner, device_factory):
        device_factory(owner, name="b-server", profile="a6000-server")
        device_factory(owner, name="a-jetson", profile="jetson-nx")
        response = api(owner).get(DEVICES)
        assert response.status_code == 200
        devices = response.json()["results"]
        assert [d["name"] for d in devices] == ["a-jetson", "b-server"]
        assert devices[0]["kind"] == "edge" and devices[1]["kind"] == "cloud"
        assert devices[0]["profile_name"] == "jetson-nx"
        assert devices[0]["status"] == "online"
        assert "credential_hash" not in devices[0]

    def test_it_hides_other_users_devices(self, api, owner, teammate, outsider, device_factory):
        device_factory(owner)
        assert api(teammate).get(DEVICES).json()["results"] == []
        assert api(outsider).get(DEVICES).json()["results"] == []

    def test_it_refuses_anonymous_users(self, api):
        assert api().get(DEVICES).status_code == 401

    def test_it_refuses_devices(self, api, owner, device_factory):
        assert api(device=device_factory(owner).credential).get(DEVICES).status_code == 403


@pytest.mark.django_db
class TestDeviceDetail:
    def test_it_shows_a_device(self, api, owner, device_factory):
        device = device_factory(owner).device
        body = api(owner).get(detail(device)).json()
        assert body["id"] == str(device.id)
        assert body["queue"] == f"device.{device.id}"

    def test_it_is_404_for_other_users(self, api, owner, teammate, outsider, device_factory):
        device = device_factory(owner).device
        assert api(teammate).get(detail(device)).status_code == 404
        assert api(outsider).get(detail(device)).status_code == 404

    def test_it_updates_the_profile(self, api, owner, device_factory):
        device = device_factory(owner).device
        response = api(owner).patch(detail(device), {"rtt_ms": 80, "uplink_mbps": 5.5,
                                                      "name": "renamed"})
        assert response.status_code == 200
        device.refresh_from_db()
        assert (device.rtt_ms, device.uplink_mbps, device.name) == (80, 5.5, "renamed")

    @pytest.mark.parametrize("body, field", [
        ({"rtt_ms": -5}, "rtt_ms"),
        ({"compute_gflops": 0}, "compute_gflops"),
        ({"kind": "fog"}, "kind"),
        ({"name": "bad name"}, "name"),
        ({"credential_hash": "0" * 64}, "credential_hash"),
        ({"status": "online"}, "status"),
        ({"owner": 1}, "owner"),
    ])
    def test_it_rejects_bad_changes(self, api, owner, device_factory, body, field):
        device = device_factory(owner).device
        before = Device.objects.values().get(pk=device.pk)
        response = api(owner).patch(detail(device), body)
        assert response.status_code == 400
        assert field in response.json()
        assert Device.objects.values().get(pk=device.pk) == before

    def test_it_rejects_a_name_the_owner_already_uses(self, api, owner, device_factory):
        device_factory(owner, name="taken")
        device = device_factory(owner).device
        response = api(owner).patch(detail(device), {"name": "taken"})
        assert response.status_code == 400
        assert "name" in response.json()

    def test_it_neither_reveals_nor_reserves_other_tenants_names(self, api, owner, outsider,
                                                                  device_factory):
        # Names are unique per owner: probing a name tells nothing about other tenants.
        device_factory(outsider, name="outsiders-name")
        device = device_factory(owner).device
        response = api(owner).patch(detail(device), {"name": "outsiders-name"})
        assert response.status_code == 200
        assert Device.objects.filter(name="outsiders-name").count() == 2

    def test_it_refuses_updates_by_other_users(self, api, owner, outsider, device_factory):
        device = device_factory(owner).device
        assert api(outsider).patch(detail(device), {"rtt_ms": 77}).status_code == 404
        device.refresh_from_db()
        assert device.rtt_ms != 77

    def test_it_does_not_allow_put(self, api, owner, device_factory):
        device = device_factory(owner).device
        assert api(owner).put(detail(device), {}).status_code == 405

    def test_it_deletes_a_device(self, api, owner, device_factory):
        device = device_factory(owner).device
        assert api(owner).delete(detail(device)).status_code == 204
        assert not Device.objects.exists()

    def test_it_refuses_to_delete_a_device_hosting_a_running_job(
            self, api, owner, device_factory, experiment_factory):
        device = device_factory(owner).device
        job = Job.objects.get(run__experiment=experiment_factory(owner, host=device))
        actions.start_job(job)
        response = api(owner).delete(detail(device))
        assert response.status_code == 409
        assert "running job" in response.json()["detail"]
        assert Device.objects.filter(pk=device.pk).exists()

    def test_it_fails_queued_jobs_of_a_deleted_device(self, api, owner, device_factory,
                                                      experiment_factory):
        device = device_factory(owner).device
        experiment = experiment_factory(owner, host=device)
        assert api(owner).delete(detail(device)).status_code == 204
        job = Job.objects.get(run__experiment=experiment)
        assert (job.state, job.device) == ("failed", None)
        assert "deleted" in job.error
        experiment.refresh_from_db()
        assert experiment.status == "failed"

    def test_it_refuses_deletion_by_other_users(self, api, owner, outsider, device_factory):
        device = device_factory(owner).device
        assert api(outsider).delete(detail(device)).status_code == 404
        assert Device.objects.filter(pk=device.pk).exists()
