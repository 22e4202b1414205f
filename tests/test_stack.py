"""``./estuary up``, smoke test: the stack in a fresh data folder (SQLite, a Redis of its own) runs
the demo experiment on its three agents, and Ctrl-C stops every process it started, nothing else.
"""
from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
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
    # Agents, server and workers logged no secret.
    secrets = [banner_value(output, "API token"), (data_dir / "secret-key").read_text().strip(),
               json.loads((data_dir / "demo-user.json").read_text())["password"],
               (data_dir / "agents" / "enrolment-token").read_text().strip()]
    for log in (data_dir / "log").iterdir():
        text = log.read_text(errors="replace")
        assert not [secret for secret in secrets if secret in text], log.name


#: The stack without the demo and with the given agents (none: the parts that serve the
#: dashboard), as bench scripts use it.
SMALL_STACK = ("import json, sys; from pathlib import Path; "
               "from agents.stack.up import StackOptions, run_stack; "
               "sys.exit(run_stack(StackOptions(root=Path.cwd(), data_dir=Path(sys.argv[1]), "
               "port=int(sys.argv[2]), demo=False, "
               "agents=tuple(map(tuple, json.loads(sys.argv[3]))))))")


def start_small_stack(data_dir: Path, port: int, output: Path,
                      agents: tuple[tuple[str, str], ...] = ()) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in NOT_CONFIGURED}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with output.open("wb") as sink:
        stack = subprocess.Popen(
            [sys.executable, "-c", SMALL_STACK, str(data_dir), str(port), json.dumps(agents)],
            cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)

    def running_or_exit():
        return stack.poll() is not None or "Estuary is running" in output.read_text()

    wait_for(running_or_exit, 300, "the stack's banner", interval_s=0.5)
    assert stack.poll() is None, output.read_text()
    return stack


def stop(stack: subprocess.Popen) -> None:
    stack.send_signal(signal.SIGINT)
    assert stack.wait(timeout=120) == 0


def log_in(server: str, username: str, password: str) -> requests.Session:
    browser = requests.Session()
    browser.get(f"{server}/accounts/login/", timeout=30)
    answer = browser.post(f"{server}/accounts/login/", timeout=30, allow_redirects=False, data={
        "username": username, "password": password,
        "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        headers={"Referer": f"{server}/accounts/login/"})
    assert answer.status_code == 302, answer.text[:500]
    return browser


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_it_serves_like_production_and_keeps_its_secrets_private(tmp_path):
    data_dir, port = tmp_path / "var", free_port()
    server = f"http://127.0.0.1:{port}"
    # An older data folder: a world-readable log must not stay so.
    (data_dir / "log").mkdir(parents=True)
    (data_dir / "log" / "demo-user.log").write_text("from an older version\n")
    (data_dir / "log" / "demo-user.log").chmod(0o644)

    stack = start_small_stack(data_dir, port, tmp_path / "first.out")
    try:
        # DEBUG is off: a bad URL shows no traceback, URL list or settings to anyone.
        for path in ("/no-such-page/", "/api/v1/no-such-endpoint/", "/static/nothing.js"):
            answer = requests.get(server + path, timeout=30)
            assert answer.status_code == 404, path
            for leak in ("Traceback", "URLconf", "urlpatterns", "DEBUG", "settings.py",
                         "api/v1/"):
                assert leak not in answer.text, f"{path} shows {leak!r}"

        # Static files are collected, hashed and sent gzipped when asked.
        manifest = json.loads((data_dir / "static" / "staticfiles.json").read_text())["paths"]
        plotly = requests.get(f"{server}/static/{manifest['vendor/plotly.min.js']}", timeout=30,
                              headers={"Accept-Encoding": "gzip, br"})
        assert plotly.status_code == 200 and plotly.headers["Content-Encoding"] == "gzip"
        assert b"window.Plotly = Plotly" in plotly.content

        demo = json.loads((data_dir / "demo-user.json").read_text())
        browser = log_in(server, demo["username"], demo["password"])
        assert browser.get(f"{server}/devices/", timeout=30,
                           allow_redirects=False).status_code == 200
        key = (data_dir / "secret-key").read_text().strip()

        # A device named like a local agent whose credential the data folder does not hold
        # (a lost agents/ folder): the next start must give it a new credential explicitly.
        user = requests.Session()
        user.headers["Authorization"] = f"Token {banner_value(tmp_path / 'first.out', 'API token')}"
        token = user.post(f"{server}/api/v1/enrolment-tokens/", json={}, timeout=30).json()
        lost = requests.post(f"{server}/api/v1/agents/enrol/", timeout=30, json={
            "token": token["token"], "name": "jetson-nx-1", "profile": "jetson-nx"}).json()
    finally:
        if stack.poll() is None:
            stop(stack)

    # The secret key is made once, private, and reused: the session of the first run is still
    # valid after a restart.
    stack = start_small_stack(data_dir, port, tmp_path / "second.out",
                              agents=(("jetson-nx-1", "jetson-nx"),))
    try:
        assert (data_dir / "secret-key").read_text().strip() == key and len(key) >= 50
        assert browser.get(f"{server}/devices/", timeout=30,
                           allow_redirects=False).status_code == 200
        # The stack's agent got the device back with a replacement token (same device, and
        # the lost credential no longer works).
        # (The device was seen moments ago, so the stack may call it online before its agent
        # has enrolled: wait for the agent's credential file.)
        credential_file = data_dir / "agents" / "jetson-nx-1.json"
        wait_for(credential_file.exists, 120, "the agent's new credential", interval_s=0.5)
        stored = json.loads(credential_file.read_text())
        assert stored["device_id"] == lost["device_id"]
        assert requests.post(f"{server}/api/v1/agents/heartbeat/", json={}, timeout=30, headers={
            "Authorization": f"Device {lost['credential']}"}).status_code == 401
        api_token = banner_value(tmp_path / "second.out", "API token")
        enrolment_token = (data_dir / "agents" / "enrolment-token").read_text().strip()

        # Secrets in private files only, never in a log; logs and state are the user's alone.
        secrets = {"demo password": demo["password"], "API token": api_token,
                   "secret key": key, "enrolment token": enrolment_token,
                   "device credential": stored["credential"]}
        logs = sorted((data_dir / "log").iterdir())
        assert {"web.log", "demo-user.log", "migrate.log"} <= {log.name for log in logs}
        for log in logs:
            text = log.read_text(errors="replace")
            assert [what for what, value in secrets.items() if value in text] == [], log.name
            assert mode(log) == 0o600, log.name
        for folder in (data_dir, data_dir / "log", data_dir / "agents", data_dir / "redis"):
            assert mode(folder) == 0o700, folder
        for private in ("secret-key", "demo-user.json", "stack.json", "estuary.sqlite3",
                        "agents/enrolment-token", "agents/jetson-nx-1.json",
                        "agents/jetson-nx-1.replacement-token"):
            assert mode(data_dir / private) == 0o600, private
    finally:
        if stack.poll() is None:
            stop(stack)
