"""``python -m estuary_client`` as a user runs it, against a real server and agent."""
import csv
import io
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.servers import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path, asgi_server):
    """``cli(*args)``: run the command line in a subprocess with its own credentials file."""
    env = {**os.environ, "ESTUARY_CREDENTIALS": str(tmp_path / "estuary" / "credentials.json"),
           "ESTUARY_SERVER": asgi_server}
    env.pop("ESTUARY_TOKEN", None)

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "estuary_client", *args], cwd=ROOT,
                              env=env, input=stdin, capture_output=True, text=True, timeout=180)

    run.credentials = tmp_path / "estuary" / "credentials.json"
    return run


def test_it_creates_watches_exports_and_reruns(cli, owner, agent_factory, user_http,
                                               asgi_server):
    agent = agent_factory("cloud-cli")
    login = cli("login", "--username", owner.username, "--password-stdin",
                stdin=f"{PASSWORD}\n")
    assert login.returncode == 0, login.stderr
    assert stat.S_IMODE(cli.credentials.stat().st_mode) == 0o600
    assert json.loads(cli.credentials.read_text())["token"] == owner.api_token

    created = cli("create", "--algorithm", "fedavg", "--name", "from the cli",
                  "--set", "rounds=3", "--set", "dataset=digits", "--set", "workers=2",
                  "--preset", "local-3", "--host", agent.device_id, "--watch")
    assert created.returncode == 0, created.stdout + created.stderr
    experiment_id = created.stdout.split()[2]
    assert "round 3/3" in created.stdout
    assert "accuracy" in created.stdout
    assert created.stdout.rstrip().endswith("succeeded")

    http = user_http(owner)
    experiment = http.get(f"{asgi_server}/api/v1/experiments/{experiment_id}/").json()
    run_id = experiment["runs"][0]["id"]
    api_points = http.get(f"{asgi_server}/api/v1/runs/{run_id}/metrics/").json()["points"]
    assert len(api_points) > 3

    as_json = cli("export", experiment_id, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    exported = json.loads(as_json.stdout)["points"]
    assert [{k: p[k] for k in api_points[0]} for p in exported] == api_points

    as_csv = cli("export", experiment_id, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["name"], int(r["step"]), float(r["value"])) for r in rows] == \
        [(p["name"], p["step"], p["value"]) for p in api_points]

    final = json.loads(cli("export", experiment_id, "--final", "--format", "json").stdout)
    assert final == http.get(f"{asgi_server}/api/v1/experiments/{experiment_id}/results/").json()

    rerun = cli("rerun", experiment_id)
    assert rerun.returncode == 0, rerun.stderr
    rerun_id = rerun.stdout.split()[2].rstrip(",")
    assert http.get(f"{asgi_server}/api/v1/experiments/{rerun_id}/").json()["rerun_of"] == \
        experiment_id
    cancelled = cli("cancel", rerun_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert http.get(f"{asgi_server}/api/v1/experiments/{rerun_id}/").json()["status"] in \
        ("cancelled", "succeeded")


def test_bad_input_exits_non_zero_naming_each_field(cli, owner):
    assert cli("--token", owner.api_token, "login").returncode == 0
    answer = cli("create", "--algorithm", "fedavg", "--set", "rounds=0",
                 "--set", "dataset=nope", "--preset", "local-3")
    assert answer.returncode == 1
    lines = answer.stderr.splitlines()
    assert any(line.startswith("config.rounds: ") for line in lines), answer.stderr
    assert any(line.startswith("config.dataset: ") for line in lines), answer.stderr
    assert answer.stdout == ""

    unknown = cli("create", "--algorithm", "no-such-method")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("algorithm: Unknown algorithm 'no-such-method'")


def test_it_lists_the_catalogue_and_an_algorithms_config_keys(cli, owner):
    assert cli("--token", owner.api_token, "login").returncode == 0
    algorithms = cli("algorithms")
    assert algorithms.returncode == 0, algorithms.stderr
    assert any(line.split()[0] == "fedavg" for line in algorithms.stdout.splitlines()[1:])
    keys = cli("algorithm", "fedavg")
    rows = {line.split()[0]: line for line in keys.stdout.splitlines()[3:]}
    assert "rounds" in rows and " 20 " in rows["rounds"]
    assert "Seed for data partition" in rows["seed"]


def test_a_refused_token_exits_with_its_own_status(cli):
    answer = cli("--token", "0" * 40, "devices")
    assert answer.returncode == 3
    assert "401" in answer.stderr


def test_ctrl_c_stops_watching_not_the_experiment(cli, owner, agent_factory, user_http,
                                                  asgi_server, tmp_path):
    agent = agent_factory("cloud-ctrl-c")
    assert cli("--token", owner.api_token, "login").returncode == 0
    created = cli("create", "--algorithm", "fedavg", "--set", "rounds=1000",
                  "--set", "dataset=digits", "--set", "workers=2", "--preset", "local-3",
                  "--host", agent.device_id)
    experiment_id = created.stdout.split()[2]
    env = {**os.environ, "ESTUARY_CREDENTIALS": str(cli.credentials)}
    watcher = subprocess.Popen([sys.executable, "-u", "-m", "estuary_client", "watch",
                                experiment_id], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        for line in watcher.stdout:
            if "round 1/1000" in line:
                break
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == 130, err
    assert "Stopped watching" in out
    http = user_http(owner)
    assert http.get(f"{asgi_server}/api/v1/experiments/{experiment_id}/").json()["status"] == \
        "running"
    assert cli("cancel", experiment_id).returncode == 0
