"""``./estuary up``: the stack in a fresh data folder (SQLite, a Redis of its own) runs the demo
experiment on its three agents; its supervisor restarts an agent that dies and leaves one whose
device was deleted stopped, the others running; Ctrl-C stops every process it started, nothing
else. Its Redis is locked as production's: a password for the control plane, a user per device.
The stack starts once for the whole module (it takes tens of seconds); the tests run in order,
the last one stops it.
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
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis
import requests

from tests.fixtures.agents import ONLINE_MARK, wait_for
from tests.fixtures.servers import REPO_ROOT, free_port

#: What a fresh machine does not have: the stack must start its own Redis and use SQLite. The
#: tests' 1 s heartbeat interval goes too: a busy CI machine can stall an agent that loads its
#: data for 3 s, and the stack is meant to run with its default.
NOT_CONFIGURED = ("REDIS_URL", "DATABASE_URL", "ESTUARY_PUBLIC_BROKER_URL", "ESTUARY_DATA_DIR",
                  "ESTUARY_TEST_DB_NAME", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "DEBUG",
                  "ALLOWED_HOSTS", "PORT", "ESTUARY_HEARTBEAT_INTERVAL_S")
EXPECTED_CHILDREN = {"redis", "web", "controlplane-worker", "controlplane-beat",
                     "agent-jetson-nx-1", "agent-jetson-orin-nano-1", "agent-a6000-1"}


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def banner_value(output: Path, label: str) -> str | None:
    found = re.search(rf"^  {label}:\s+(\S+)", output.read_text(), re.MULTILINE)
    return found.group(1) if found else None


@dataclass
class RunningStack:
    process: subprocess.Popen
    output: Path
    data_dir: Path
    port: int
    bystander: subprocess.Popen
    started: list[psutil.Process]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict:
        return json.loads((self.data_dir / "stack.json").read_text())

    def text(self) -> str:
        return self.output.read_text()

    def log(self, child: str) -> str:
        return (self.data_dir / "log" / f"{child}.log").read_text(errors="replace")

    def http(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {banner_value(self.output, 'API token')}"
        return session


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("stack")
    data_dir, port = tmp_path / "var", free_port()
    env = {k: v for k, v in os.environ.items() if k not in NOT_CONFIGURED}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"])
    output = tmp_path / "stack.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "agents.stack", "up", "--port", str(port),
             "--data-dir", str(data_dir)],
            cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    running = RunningStack(process, output, data_dir, port, bystander, [])
    try:
        def dashboard_or_exit():
            return "exited" if process.poll() is not None else banner_value(output, "Dashboard")

        dashboard = wait_for(dashboard_or_exit, 300, "the dashboard URL", interval_s=1)
        assert dashboard != "exited", output.read_text()
        running.started = psutil.Process(process.pid).children(recursive=True)
        yield running
    finally:
        if process.poll() is None:  # a test failed before Ctrl-C: stop it the same way
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
        for child in psutil.Process().children(recursive=True):
            if child.pid != bystander.pid and child in running.started and alive(child):
                child.kill()
        bystander.kill()
        bystander.wait()


def test_it_runs_the_demo(stack):
    dashboard = banner_value(stack.output, "Dashboard")
    assert dashboard.startswith(f"{stack.url}/experiments/")
    assert banner_value(stack.output, "Log in as") == "demo"
    state = stack.state()
    assert set(state["children"]) == EXPECTED_CHILDREN
    assert "started Redis on port" in stack.text()
    assert {child.pid for child in stack.started} >= set(state["children"].values())

    http = stack.http()
    experiment = http.get(f"{stack.url}/api/v1/experiments/{state['experiment']}/",
                          timeout=30).json()
    assert [run["method"] for run in experiment["runs"]] == ["splitfed", "fedavg"]
    first_run = experiment["runs"][0]["id"]
    # The distributed demo: each role on its own local agent, the A6000 coordinating.
    distributed = http.get(banner_value(stack.output, "Distributed").replace(
        "/experiments/", "/api/v1/experiments/"), timeout=30).json()
    assert distributed["execution"] == "distributed"
    assert [slot["name"] for slot in distributed["runs"][0]["placement"]] == [
        "a6000-1", "jetson-nx-1", "jetson-orin-nano-1"]

    def first_points():
        answer = http.get(f"{stack.url}/api/v1/runs/{first_run}/metrics/", timeout=30)
        return answer.ok and answer.json()["points"]

    points = wait_for(first_points, 300, "the demo run's first metrics", interval_s=1)
    assert {"accuracy", "sim_time_s"} <= {point["name"] for point in points}
    # The worker touches the progress mark its supervisor watches (restarted if stuck).
    wait_for((stack.data_dir / "reaper.mark").exists, 60, "the reaper's progress mark",
             interval_s=1)


def test_its_broker_is_locked(stack):
    """Nobody gets in without the password, which is kept 0600 and never shown; an agent has
    only its device's user, which cannot list keys nor read another device's queue."""
    data_dir, output, state = stack.data_dir, stack.output, stack.state()
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


def test_its_supervisor_restarts_a_killed_agent(stack):
    before = stack.state()["children"]
    killed = before["agent-jetson-nx-1"]
    os.kill(killed, signal.SIGKILL)

    def restarted_pid():
        pid = stack.state()["children"].get("agent-jetson-nx-1")
        return pid if pid not in (None, killed) else None

    pid = wait_for(restarted_pid, 60, "the agent's restart", interval_s=0.5)
    assert "agent-jetson-nx-1 was killed by SIGKILL; restarting it in 1 s" in stack.text()
    assert f"restarted agent-jetson-nx-1 (pid {pid})" in stack.text()
    assert "supervisor: restarted agent-jetson-nx-1" in stack.log("agent-jetson-nx-1")
    wait_for(lambda: stack.log("agent-jetson-nx-1").count(ONLINE_MARK) == 2, 180,
             "the restarted agent to come online again", interval_s=1)
    # Nothing else was touched: same pids, all alive, the stack still running.
    after = stack.state()["children"]
    assert {name: pid for name, pid in after.items() if name != "agent-jetson-nx-1"} == {
        name: pid for name, pid in before.items() if name != "agent-jetson-nx-1"}
    assert all(psutil.pid_exists(pid) for pid in after.values())
    assert stack.process.poll() is None


def test_it_leaves_an_agent_whose_device_was_deleted_stopped(stack):
    http = stack.http()
    before = stack.state()["children"]
    devices = http.get(f"{stack.url}/api/v1/devices/", params={"name": "jetson-orin-nano-1"},
                       timeout=30).json()["results"]
    device = next(d for d in devices if d["name"] == "jetson-orin-nano-1")
    answer = http.delete(f"{stack.url}/api/v1/devices/{device['id']}/", timeout=30)
    assert answer.status_code == 204, answer.text

    # Its next heartbeat is refused: the agent exits with status 3 and stays stopped.
    line = ("agent-jetson-orin-nano-1 exited with status 3; leaving it stopped: the control "
            "plane refused its credential")
    wait_for(lambda: line in stack.text(), 60, "the agent to exit", interval_s=0.5)
    time.sleep(3)  # longer than the first restart delay: it must not come back
    state = stack.state()
    assert "agent-jetson-orin-nano-1" not in state["children"]
    assert "refused its credential" in state["stopped"]["agent-jetson-orin-nano-1"]
    assert "restarted agent-jetson-orin-nano-1" not in stack.text()
    assert {name: pid for name, pid in state["children"].items()} == {
        name: pid for name, pid in before.items() if name != "agent-jetson-orin-nano-1"}
    assert http.get(f"{stack.url}/api/v1/algorithms/", timeout=30).status_code == 200
    assert stack.process.poll() is None


def test_ctrl_c_stops_only_what_it_started(stack):
    running = stack.state()["children"]
    everything = stack.started + [psutil.Process(pid) for pid in running.values()
                                  if pid not in {p.pid for p in stack.started}]
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=120) == 0, stack.text()

    leftovers = [process for process in everything if alive(process)]
    assert leftovers == [], stack.text()
    assert stack.bystander.poll() is None
    assert not (stack.data_dir / "stack.json").exists()
    assert "cancelled the demo experiment" in stack.text()
    assert "stopped." in stack.text()
    # Each running agent was asked to stop (SIGTERM to its group) and stopped cleanly.
    for name in ("a6000-1", "jetson-nx-1"):
        log = stack.log(f"agent-{name}")
        assert "stopping: received SIGTERM" in log and f"agent {name} stopped" in log
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.url}/", timeout=5)
    # Agents, server and workers logged no secret.
    data_dir = stack.data_dir
    secrets = [banner_value(stack.output, "API token"),
               (data_dir / "secret-key").read_text().strip(),
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
