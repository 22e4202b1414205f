"""``python -m agents run`` explains every expected failure in one line (exit 2), never a traceback."""
import subprocess
import sys

import pytest

from tests.fixtures.servers import free_port


def run_agent(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agents", "run", *args], capture_output=True,
                          text=True, timeout=timeout_s)


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"error: {expected}" in result.stderr


def test_it_names_the_known_profiles_when_the_profile_is_unknown(tmp_path):
    result = run_agent("--server", "http://127.0.0.1:1", "--token", "t", "--name", "dev-1",
                       "--profile", "jetson-nano-9000", "--state-dir", str(tmp_path))

    assert_one_line_error(result, "--profile 'jetson-nano-9000' is not a known profile; known: ")
    assert "jetson-orin-nano" in result.stderr


def test_it_says_when_the_server_is_unreachable(tmp_path):
    port = free_port()  # nothing listens there
    result = run_agent("--server", f"http://127.0.0.1:{port}", "--token", "t", "--name", "dev-1",
                       "--profile", "jetson-nx", "--state-dir", str(tmp_path))

    assert_one_line_error(result, f"cannot reach the control plane at http://127.0.0.1:{port}")
    assert not (tmp_path / "dev-1.json").exists()


def test_it_asks_for_a_token_when_nothing_is_stored(tmp_path):
    result = run_agent("--server", "http://127.0.0.1:1", "--name", "dev-1",
                       "--profile", "jetson-nx", "--state-dir", str(tmp_path))

    assert_one_line_error(result, "no stored credential for 'dev-1'")


@pytest.mark.parametrize("override, message", [
    ("rtt_ms=fast", "--override rtt_ms: 'fast' is not a valid float"),
    ("colour=red", "--override 'colour=red': expected KEY=VALUE with KEY one of"),
    ("memory_mib=-5", "--override memory_mib: must be positive"),
])
def test_it_checks_overrides_before_enrolling(tmp_path, override, message):
    result = run_agent("--server", "http://127.0.0.1:1", "--token", "t", "--name", "dev-1",
                       "--profile", "jetson-nx", "--override", override,
                       "--state-dir", str(tmp_path))

    assert_one_line_error(result, message)


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_refused_token_with_the_servers_reason(asgi_server, tmp_path):
    from controlplane.devices.models import Device

    result = run_agent("--server", asgi_server, "--token", "not-a-token", "--name", "dev-1",
                       "--profile", "jetson-nx", "--state-dir", str(tmp_path))

    assert_one_line_error(result, "enrolment refused (HTTP 400): token: Invalid, expired or revoked "
                                  "enrolment token.")
    assert not (tmp_path / "dev-1.json").exists()
    assert not Device.objects.exists()


@pytest.mark.parametrize("broker, message", [
    ("redis://default:secret@127.0.0.1:6379/0", "--broker: give only the address; the agent "
                                               "logs in as its device's own broker user"),
    ("http://127.0.0.1:6379/0", "--broker: expected a redis://, rediss:// or unix:// URL"),
])
def test_it_refuses_a_broker_identity_other_than_the_devices(tmp_path, broker, message):
    result = run_agent("--server", "http://127.0.0.1:1", "--token", "t", "--name", "dev-1",
                       "--profile", "jetson-nx", "--broker", broker, "--state-dir", str(tmp_path))

    assert_one_line_error(result, message)
    assert "secret" not in result.stderr


@pytest.mark.django_db(transaction=True)
def test_it_explains_that_a_token_cannot_take_over_an_enrolled_device(
        asgi_server, tmp_path, owner, device_factory, enrolment_token, api):
    victim = device_factory(owner, name="jetson-07")

    result = run_agent("--server", asgi_server, "--token", enrolment_token, "--name", "jetson-07",
                       "--profile", "jetson-nx", "--state-dir", str(tmp_path))

    assert_one_line_error(result, "the control plane already has a device named 'jetson-07', "
                                  "and an enrolment token cannot take it over")
    assert "replacement token" in result.stderr
    assert not (tmp_path / "jetson-07.json").exists()
    assert api(device=victim.credential).post("/api/v1/agents/heartbeat/", {}).status_code == 200
