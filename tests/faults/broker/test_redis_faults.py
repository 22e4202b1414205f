"""The broker (Redis) goes away while an agent runs a job, and comes back.

One scenario with real processes (daphne, an agent, a throw-away Redis), replaying what a user
saw (docs/controlplane.md, "Staying up"):

- while Redis is down, every request whose commit succeeded answers 2xx (metrics, logs,
  finish, heartbeats): live publishing is best-effort;
- every point the method produced is stored exactly once (compared step by step with the same
  method run here), and every log line once, in order;
- the agent whose job ended during the outage says so in its heartbeat (device ``degraded``,
  with the reason) and takes the next job once Redis is back;
- a WebSocket open when Redis stops is closed (4503: the live view is unavailable, so the page
  reconnects to a fresh history rather than missing events), and one opened after Redis is back
  gets its history and live points within seconds.

and, without an agent, what a page and an agent see while Redis is stopped or hangs.
"""
from __future__ import annotations

import asyncio
import re
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import pytest
import requests

from tests.fixtures.agents import wait_for
from tests.fixtures.servers import WebSocketClosed, ws_connect

pytestmark = pytest.mark.django_db(transaction=True)

#: Long enough (a few seconds) to still be reporting when Redis stops.
SPANNING = {"rounds": 40, "dataset": "digits", "workers": 2}
SMALL = {"rounds": 3, "dataset": "digits", "workers": 2}
FINISHED = {"succeeded", "failed", "cancelled"}


def launch(http, server: str, device_id: str, config: dict, name: str) -> dict:
    response = http.post(f"{server}/api/v1/experiments/", json={
        "name": name, "algorithm": "fedavg", "config": config, "preset": "local-3",
        "host": device_id}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


@contextmanager
def heartbeating(server: str, credential: str, interval_s: float = 0.5) -> Iterator[None]:
    """Heartbeat as an agent would while the block runs, so that a reaper running meanwhile
    (the session's control-plane worker, if a test started it) sees the device alive."""
    stop = threading.Event()

    def beat() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Device {credential}"
        while not stop.wait(interval_s):
            try:
                session.post(f"{server}/api/v1/agents/heartbeat/", json={}, timeout=10)
            except requests.RequestException:
                pass

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=15)


def job_of(run_id: str):
    from controlplane.experiments.models import Job

    return Job.objects.get(run_id=run_id)


def expected_points(run_id: str) -> dict[tuple[str, int], tuple[float, float]]:
    """What the method produces for the run's stored config, run here with a MemoryReporter
    (methods are deterministic for a seed on the CPU)."""
    from controlplane.experiments.models import Run
    from ml import registry
    from ml.reporting import MemoryReporter

    run = Run.objects.get(pk=run_id)
    method = registry.get(run.method)
    reporter = MemoryReporter()
    method.run(method.parse_config(run.config), reporter)
    return {(p.name, p.step): (p.value, p.sim_time_s) for p in reporter.points}


def stored_points(run_id: str) -> list[tuple[str, int, float, float]]:
    from controlplane.metrics.models import MetricPoint

    return list(MetricPoint.objects.filter(run_id=run_id)
                .values_list("name", "step", "value", "sim_time_s"))


def logged_lines(agent_output: str, run_id: str) -> list[str]:
    """The lines the agent's reporter logged for the run, in order (from its own log)."""
    mark = re.compile(rf" agents\.reporter: \[run {run_id[:8]}\] (.*)$")
    return [found.group(1) for line in agent_output.splitlines()
            if (found := mark.search(line))]


def device_answer(http, server: str, device_id: str) -> dict:
    return http.get(f"{server}/api/v1/devices/{device_id}/", timeout=10).json()


class SocketWatcher(threading.Thread):
    """Holds a WebSocket open on its own thread until the server closes it."""

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.opened = threading.Event()
        self.close_code: int | None = None

    def run(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        async with ws_connect(self.url, token=self.token) as ws:
            await ws.receive_json()  # the history
            self.opened.set()
            try:
                while True:
                    await ws.receive_json(timeout=120)
            except WebSocketClosed as closed:
                self.close_code = closed.code


async def first_history_and_points(url: str, token: str, run_id: str,
                                   timeout_s: float) -> tuple[float, float]:
    """Seconds from connecting until the history, and until the run's first live points."""
    started = time.monotonic()
    async with ws_connect(url, token=token) as ws:
        message = await ws.receive_json(timeout=timeout_s)
        assert message["type"] == "history"
        history_after = time.monotonic() - started
        while True:
            message = await ws.receive_json(timeout=timeout_s)
            if message["type"] == "points" and message["run"] == run_id:
                return history_after, time.monotonic() - started


def test_redis_outage_during_a_job(agent_factory, owner, user_http, fault_server, fault_redis):
    http = user_http(owner)
    server = fault_server.url
    agent = agent_factory("fault-cloud")
    device_id = agent.device_id

    experiment = launch(http, server, device_id, SPANNING, "spans a broker outage")
    run_id = experiment["runs"][0]["id"]
    ws_url = f"{server.replace('http://', 'ws://')}/ws/experiments/"
    watcher = SocketWatcher(ws_url + experiment["id"] + "/", owner.api_token)
    watcher.start()
    assert watcher.opened.wait(30), "no history on the first WebSocket"
    wait_for(lambda: stored_points(run_id), 120, "the job to report its first points")

    # Redis goes away while the job reports; the job ends during the outage.
    fault_redis.stop()
    down_at = time.monotonic()
    wait_for(lambda: job_of(run_id).state in FINISHED, 120, "the job to finish without Redis")
    finished_after = time.monotonic() - down_at
    assert job_of(run_id).state == "succeeded", job_of(run_id).error
    # The job's task returned (its ack failed: Redis is still down), the wedge of a Celery
    # consumer that never reconnects by itself.
    wait_for(lambda: re.search(r"Task estuary\.run_job\[\S+\] succeeded", agent.output()), 30,
             "the agent's task to end while Redis is down")
    watcher.join(30)
    assert watcher.close_code == 4503  # the page shows "Reconnecting…"
    device = wait_for(lambda: (answer := device_answer(http, server, device_id))["status"]
                      == "degraded" and answer, 30, "the device to show degraded")
    assert "broker" in device["status_detail"]
    degraded_after = time.monotonic() - down_at

    fault_redis.start()
    up_at = time.monotonic()
    wait_for(lambda: device_answer(http, server, device_id)["status"] != "degraded", 60,
             "the agent to consume its queue again")
    next_experiment = launch(http, server, device_id, SMALL, "after the outage")
    next_run = next_experiment["runs"][0]["id"]
    history_s, live_s = asyncio.run(first_history_and_points(
        ws_url + next_experiment["id"] + "/", owner.api_token, next_run, timeout_s=60))
    wait_for(lambda: job_of(next_run).state in FINISHED, 120, "the next job to finish")
    next_job_after = time.monotonic() - up_at
    assert job_of(next_run).state == "succeeded", job_of(next_run).error

    # Every request whose commit succeeded answered 2xx, Redis or not.
    reports = fault_server.statuses(
        r"/(metrics|logs)/$|/agents/(heartbeat|jobs/.*/(start|finish))/$")
    assert not {status for status in reports if status >= 500}, reports
    # Every point the method produced, stored once, step by step.
    expected = expected_points(run_id)
    stored = stored_points(run_id)
    assert len(stored) == len({(name, step) for name, step, *_ in stored}) == len(expected)
    for name, step, value, sim_time_s in stored:
        assert (value, sim_time_s) == pytest.approx(expected[(name, step)], rel=1e-9), (name, step)
    # Every log line once, in the order the agent logged it.
    from controlplane.metrics.models import RunLog

    lines = list(RunLog.objects.filter(run_id=run_id).order_by("seq")
                 .values_list("line", flat=True))
    assert lines == logged_lines(agent.output(), run_id)
    assert "fedavg finished" in lines

    print(f"\n[redis outage] statuses {dict(reports)}; job finished {finished_after:.1f}s after "
          f"Redis stopped; degraded shown {degraded_after:.1f}s after; next job done "
          f"{next_job_after:.1f}s after Redis returned; new WebSocket: history {history_s:.2f}s, "
          f"first live points {live_s:.2f}s")


async def first_message_or_close(url: str, token: str, timeout_s: float) -> tuple[object, float]:
    """(the first message's type, or the close code; seconds it took)."""
    started = time.monotonic()
    async with ws_connect(url, token=token) as ws:
        try:
            message = await ws.receive_json(timeout=timeout_s)
        except WebSocketClosed as closed:
            return closed.code, time.monotonic() - started
        return message["type"], time.monotonic() - started


def test_a_websocket_without_redis_is_closed_at_once_and_served_after_it_returns(
        owner, user_http, device_factory, fault_server, fault_redis):
    host = device_factory(owner, name="fault-host")
    experiment = launch(user_http(owner), fault_server.url, str(host.device.id), SMALL,
                        "watched without Redis")
    url = f"{fault_server.url.replace('http://', 'ws://')}/ws/experiments/{experiment['id']}/"

    fault_redis.stop()
    try:
        # Not "Live" on a socket that will never get an event: closed, so the page retries.
        code, _ = asyncio.run(first_message_or_close(url, owner.api_token, timeout_s=20))
        assert code == 4503
    finally:
        fault_redis.start()
    kind, seconds = asyncio.run(first_message_or_close(url, owner.api_token, timeout_s=20))
    assert kind == "history"
    print(f"\n[websocket] closed 4503 while Redis was down; history {seconds:.2f}s after it "
          "returned")


def test_a_hung_redis_fails_no_committed_request_and_no_page_shows_live(
        owner, user_http, device_factory, fault_server, fault_redis):
    host = device_factory(owner, name="hung-host")
    agent = requests.Session()
    agent.headers["Authorization"] = f"Device {host.credential}"
    with heartbeating(fault_server.url, host.credential):
        experiment = launch(user_http(owner), fault_server.url, str(host.device.id), SMALL,
                            "watched while Redis hangs")
        job = experiment["runs"][0]["job"]["id"]
        url = f"{fault_server.url.replace('http://', 'ws://')}/ws/experiments/{experiment['id']}/"

        fault_redis.hang()
        try:
            code, _ = asyncio.run(first_message_or_close(url, owner.api_token, timeout_s=60))
            started = agent.post(f"{fault_server.url}/api/v1/agents/jobs/{job}/start/", json={},
                                 timeout=90)
            finished = agent.post(f"{fault_server.url}/api/v1/agents/jobs/{job}/finish/",
                                  json={"state": "succeeded", "error": "", "result": {}},
                                  timeout=90)
        finally:
            fault_redis.resume()
    assert code == 4503
    assert (started.status_code, finished.status_code) == (200, 200)
    assert job_of(experiment["runs"][0]["id"]).state == "succeeded"
    kind, _ = asyncio.run(first_message_or_close(url, owner.api_token, timeout_s=20))
    assert kind == "history"
