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


def test_every_broker_connection_is_the_devices_own_user_even_at_another_address(
        agent_factory, redis_url, redis_client):
    """``--broker`` changes only where the broker is; the agent still logs in as its device's
    user and consumes its own queue with it."""
    import psutil

    from controlplane.devices.broker import broker_username

    address = redis_url.replace("127.0.0.1", "localhost")
    agent = agent_factory("edge-9", profile="jetson-nx", extra=("--broker", address))
    user = broker_username(agent.device_id)
    assert agent.stored()["broker_url"].startswith(f"redis://{user}:")

    def clients_by_port() -> dict[int, dict]:
        return {int(c["addr"].rpartition(":")[2]): c for c in redis_client.client_list()}

    def agents_redis_ports() -> set[int]:
        process = psutil.Process(agent.process.popen.pid)
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        return {c.laddr.port for c in process.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == port}

    def agents_clients() -> list[dict]:
        clients = clients_by_port()
        return [clients[port] for port in agents_redis_ports() if port in clients]

    def consuming() -> bool:
        return any(client["cmd"] == "brpop" for client in agents_clients())

    wait_for(consuming, 20, "the agent blocking on its queue")
    assert {client["user"] for client in agents_clients()} == {user}
    assert redis_client.exists(f"_kombu.binding.{agent.stored()['queue']}")
