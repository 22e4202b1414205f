"""An agent enrols once, keeps its credential in a 0600 file, and a restart reuses it."""
import signal
import stat

import pytest

from tests.fixtures.agents import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_stores_a_0600_credential_and_reuses_it_without_a_token(agent_factory, owner):
    from controlplane.devices.models import Device

    first = agent_factory("jetson-7", profile="jetson-orin-nano",
                          extra=("--override", "rtt_ms=40", "--override", "compute_gflops=75"))

    stored = first.stored()
    assert stat.S_IMODE(first.credential_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.state_dir.stat().st_mode) == 0o700
    device = Device.objects.get(name="jetson-7")
    assert str(device.id) == stored["device_id"]
    assert device.owner == owner
    assert (device.profile_name, device.kind) == ("jetson-orin-nano", "edge")
    assert (device.rtt_ms, device.compute_gflops, device.uplink_mbps) == (40.0, 75.0, 50.0)
    assert stored["queue"] == f"device.{device.id}"
    assert stored["heartbeat_interval_s"] == 1

    first.send(signal.SIGTERM)
    assert first.wait() == 0
    assert "agent jetson-7 stopped" in first.output()

    # No token this time, and no overrides: the stored credential re-enrols the same device,
    # whose profile is refreshed from the catalogue.
    second = agent_factory("jetson-7", profile="jetson-orin-nano", token=None,
                           state_dir=first.state_dir)

    assert "reusing the stored credential" in second.output()
    assert second.stored() == stored
    assert Device.objects.filter(name="jetson-7").count() == 1
    device = Device.objects.get(name="jetson-7")
    assert (device.rtt_ms, device.compute_gflops) == (15.0, 250.0)
    wait_for(lambda: Device.objects.get(name="jetson-7").last_seen > device.last_seen, 10,
             "a heartbeat from the restarted agent")
    assert Device.objects.get(name="jetson-7").status() == "online"
