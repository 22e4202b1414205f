"""docker-compose.yml: Compose itself parses it (when installed; there is no engine in CI), and
its services are wired as the README says: Redis, PostgreSQL, web and worker with healthchecks
where others wait on them, scalable agents that enrol with the bootstrap's token."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.fixtures.servers import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"


def compose_command() -> list[str] | None:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1), whichever is installed."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=60).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # anchors and `<<` merges resolved


def test_compose_config_parses_it():
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run([*command, "-f", str(COMPOSE_FILE), "config", "--quiet"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_it_has_the_services_with_healthchecks(compose):
    services = compose["services"]
    assert {"redis", "postgres", "migrate", "web", "worker", "beat", "bootstrap"} <= set(services)
    for name in ("redis", "postgres", "web"):
        assert services[name]["healthcheck"]["test"], name
    assert services["web"]["command"][:3] == ["python", "-m", "controlplane.serve"]
    assert "ESTUARY_WEB_PROCESSES" in services["web"]["environment"]  # several, one port
    assert services["worker"]["command"][:4] == ["celery", "-A", "controlplane", "worker"]
    # Beat runs as its own service, so it cannot outlive the worker (two beats = two reapers).
    assert "-B" not in services["worker"]["command"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "controlplane", "beat"]
    assert (REPO_ROOT / services["web"]["build"] / "Dockerfile").is_file()


def test_its_agents_can_scale_and_enrol(compose):
    services = compose["services"]
    agents = {name: s for name, s in services.items() if name.startswith("agent-")}
    assert len(agents) >= 3
    for name, agent in agents.items():
        # Scaling needs no fixed container name or host port, and a unique device name.
        assert "container_name" not in agent and "ports" not in agent, name
        command = " ".join(agent["command"])
        assert "agents run" in command and "--token-file /shared/enrolment-token" in command
        assert "$$(hostname)" in command, name
        assert agent["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"


def test_every_dependency_and_volume_is_declared(compose):
    services = compose["services"]
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name}: volume {source} not declared"


def test_its_redis_takes_a_password_that_only_the_control_plane_has(compose):
    services = compose["services"]
    assert "--requirepass" in " ".join(services["redis"]["command"])
    for name in ("web", "worker", "migrate"):
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://:$"), name
    for name, service in services.items():
        if name.startswith("agent-"):
            assert "REDIS_URL" not in (service.get("environment") or {}), name
