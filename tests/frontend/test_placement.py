"""The experiment page shows a distributed run's placement, and what its gang waits for; the
new-experiment form offers the execution choice."""
import pytest
from django.test import Client

from controlplane.experiments import actions
from controlplane.experiments.models import Run


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_experiment_page_shows_the_placement_and_the_devices_it_waits_for(
        owner, device_factory, experiment_factory):
    cloud = device_factory(owner, name="cloud-1", profile="a6000-server").device
    edges = [device_factory(owner, name=f"jetson-{i}", profile="jetson-nx").device
             for i in (1, 2)]
    devices = [str(device.id) for device in [cloud, *edges]]
    config = {"rounds": 2, "workers": 3, "dataset": "digits"}
    first = experiment_factory(owner, execution="distributed", devices=devices, config=config)
    waiting = experiment_factory(owner, execution="distributed", devices=devices, config=config)
    actions.allocate_gangs()
    assert Run.objects.get(experiment=waiting).waiting_for

    page = logged_in(owner).get(f"/experiments/{waiting.id}/").content.decode()
    assert "placement-table" in page and "Placement" in page
    for name in ("cloud-1", "jetson-1", "jetson-2"):
        assert f"<td>{name}</td>" in page
    assert "<td>0, 2</td>" in page  # jetson-1 hosts virtual workers 0 and 2
    # Every device of the gang is busy with the first run (listed in device-id order).
    assert "Waiting for devices: " in page
    for name in ("cloud-1", "jetson-1", "jetson-2"):
        assert f"{name} (busy with another job)" in page
    assert "Waiting for devices" not in logged_in(owner).get(
        f"/experiments/{first.id}/").content.decode()


@pytest.mark.django_db
def test_the_new_experiment_form_offers_distributed_execution(owner):
    page = logged_in(owner).get("/experiments/new/").content.decode()
    assert 'id="execution"' in page and 'value="distributed"' in page
