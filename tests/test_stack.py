"""``./estuary up``, smoke test: the stack in a fresh data folder (SQLite, a Redis of its own) runs
the demo experiment on its three agents, and Ctrl-C stops every process it started, nothing else.
Its Redis is locked as production's: a password for the control plane, a user per device.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis
import requests

from tests.fixtures.agents import wait_for
from tests.fixtures.servers import REPO_ROOT, free_port

#: What a fresh machine does not have: the stack must start its own Redis and use SQLite. The
#: tests' 1 s heartbeat interval goes too: a busy CI machine can stall an agent that loads its
#: data for 3 s, and the stack is meant to run with its default.
NOT_CONFIGURED = ("REDIS_URL", "DATABASE_URL", "ESTUARY_PUBLIC_BROKER_URL", "ESTUARY_DATA_DIR",
                  "ESTUARY_TEST_DB_NAME", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "DEBUG",
                  "ALLOWED_HOSTS", "PORT", "ESTUARY_HEARTBEAT_INTERVAL_S")
EXPECTED_CHILDREN = {"redis", "web", "controlplane-worker", "agent-jetson-nx-1",
                     "agent-jetson-orin-nano-1", "agent-a6000-1"}


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def banner_value(output: Path, label: str) -> str | None:
    found = re.search(rf"^  {label}:\s+(\S+)", output.read_text(), re.MULTILINE)
    return found.group(1) if found else None


def assert_the_broker_is_locked(data_dir: Path, output: Path, state: dict) -> None:
    """Nobody gets in without the password, which is kept 0600 and never shown; an agent has
    only its device's user, which cannot list keys nor read another device's queue."""
    port = int(re.search(r"started Redis on port (\d+)", output.read_text()).group(1))
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port, socket_timeout=5).get("anything")
    config = data_dir / "redis" / "auth.conf"
    assert config.stat().st_mode & 0o777 == 0o600
    password = config.read_text().split()[1]
    shown = output.read_text() + "".join(
        log.read_text(errors="replace") for log in (data_dir / "log").glob("*.log"))
    assert password not in shown

    a6000 = json.loads((data_dir / "agents" / "a6000-1.json").read_text())
    jetson = json.loads((data_dir / "agents" / "jetson-nx-1.json").read_text())
    device = redis.Redis.from_url(a6000["broker_url"], socket_timeout=5)
    assert device.ping()
    for command in (("SCAN", 0), ("LRANGE", jetson["queue"], 0, -1), ("PUBLISH", "x", "y")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            device.execute_command(*command)
    agent_env = psutil.Process(state["children"]["agent-a6000-1"]).environ()
    assert "REDIS_URL" not in agent_env and password not in "".join(agent_env.values())


def test_it_runs_the_demo_and_ctrl_c_stops_only_what_it_started(tmp_path):
    data_dir, port = tmp_path / "var", free_port()
    env = {k: v for k, v in os.environ.items() if k not in NOT_CONFIGURED}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    output = tmp_path / "stack.out"
    with output.open("wb") as sink:
        stack = subprocess.Popen(
            [sys.executable, "-m", "agents.stack", "up", "--port", str(port),
             "--data-dir", str(data_dir)],
            cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    started: list[psutil.Process] = []
    try:
        def dashboard_or_exit():
            return "exited" if stack.poll() is not None else banner_value(output, "Dashboard")

        dashboard = wait_for(dashboard_or_exit, 300, "the dashboard URL", interval_s=1)
        assert dashboard != "exited", output.read_text()
        assert dashboard.startswith(f"http://127.0.0.1:{port}/experiments/")
        assert banner_value(output, "Log in as") == "demo"
        state = json.loads((data_dir / "stack.json").read_text())
        assert set(state["children"]) == EXPECTED_CHILDREN
        assert "started Redis on port" in output.read_text()
        started = psutil.Process(stack.pid).children(recursive=True)
        assert {child.pid for child in started} >= set(state["children"].values())

        http = requests.Session()
        http.headers["Authorization"] = f"Token {banner_value(output, 'API token')}"
        experiment = http.get(f"http://127.0.0.1:{port}/api/v1/experiments/"
                              f"{state['experiment']}/", timeout=30).json()
        assert [run["method"] for run in experiment["runs"]] == ["splitfed", "fedavg"]
        first_run = experiment["runs"][0]["id"]

        def first_points():
            answer = http.get(f"http://127.0.0.1:{port}/api/v1/runs/{first_run}/metrics/",
                              timeout=30)
            return answer.ok and answer.json()["points"]

        points = wait_for(first_points, 300, "the demo run's first metrics", interval_s=1)
        assert {"accuracy", "sim_time_s"} <= {point["name"] for point in points}
        assert_the_broker_is_locked(data_dir, output, state)

        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=120) == 0, output.read_text()
    finally:
        if stack.poll() is None:  # the test failed before Ctrl-C: stop it the same way
            stack.send_signal(signal.SIGTERM)
            stack.wait(timeout=120)
        leftovers = [process for process in started if alive(process)]
        for process in leftovers:
            process.kill()
        bystander_alive = bystander.poll() is None
        bystander.kill()
        bystander.wait()

    assert leftovers == [], output.read_text()
    assert bystander_alive
    assert not (data_dir / "stack.json").exists()
    assert "cancelled the demo experiment" in output.read_text()
    assert "stopped." in output.read_text()
    # Each agent was asked to stop (SIGTERM to its group) and stopped cleanly.
    for name in ("a6000-1", "jetson-nx-1", "jetson-orin-nano-1"):
        log = (data_dir / "log" / f"agent-{name}.log").read_text()
        assert "stopping: received SIGTERM" in log and f"agent {name} stopped" in log
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)
