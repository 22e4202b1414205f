"""The control plane at testbed scale (issue #20): ingestion, live fan-out, long histories,
many agents, and the agent process itself.

Each part starts the real pieces as ``./estuary up`` does (``agents.stack``: its own Redis,
migrate, daphne with DEBUG off, the control plane's Celery worker and beat) on a fresh database:
SQLite in a temporary folder, or a new database on the PostgreSQL of ``--postgres URL`` (dropped
afterwards). Devices enrol through ``/api/v1/agents/enrol/`` with the real agent's HTTP client
(:class:`agents.client.ControlPlane`).

- **ingestion**: one agent's real reporter (:class:`agents.reporter.HttpReporter`, batches of
  200) fed by ``metric()`` as fast as it takes them, to a started run: points/s from the first
  point to ``close()`` returning (every batch acknowledged), with 4 batches in flight (the
  agent's default) and with one at a time; on SQLite and on PostgreSQL. Then 4 devices at once,
  each posting batches of 200 to its own run one after the other with the client (one thread
  and keep-alive connection each). A resent batch is checked to store nothing twice. ``--profile`` also runs the
  same POSTs in-process under cProfile and prints where the time goes.
- **fan-out**: WebSockets (API token) watch experiments while their devices post 20-point
  batches; latency = the socket's receipt - the moment before the POST, per delivery (client and
  server share this machine's clock). The sockets are :mod:`bench.lean_ws` clients in one event
  loop, stamped when their bytes arrive and parsed after the run, so the client measures the
  server and not itself; the row says how much of a core that loop used, and daphne's CPU per
  delivered message (the POSTs' included), which a busy machine does not inflate. 100 sockets
  on one experiment; 20 experiments with 5 sockets each, all posting at once; and both again
  with every other socket on one more daphne process, on another port, behind the same Redis
  (the one experiment's device posts to the stack's port; of the 20, every other device posts
  to the other process). ``--web-processes 1`` makes these one process and two.
- **long history**: a run with 1,000,000 points (4 series of 250,000, inserted directly, then
  their blocks rebuilt as the migration does), on SQLite and on PostgreSQL; time
  from opening the WebSocket to its parsed ``history`` message, its size; the API's downsampled
  series and a zoomed range at full resolution.
- **list of experiments**: the owner has 66 experiments (as in the issue); 20 clients (threads,
  a keep-alive session each, API token) GET ``/api/v1/experiments/`` (its first page, the
  default page size) 50 times each, all at once; latency per GET, the page's size and the
  server processes' CPU per GET.

The server runs ``./estuary up``'s number of ASGI processes on its port (2 on 2 cores or more)
unless ``--web-processes N`` says otherwise; the rows name it.
- **many agents**: 200 simulated agents (the real :class:`ControlPlane` client and
  :class:`agents.heartbeat.Heartbeat` thread each, heartbeating every 2 s) and a real Celery
  consumer (``estuary.run_job``) per group of 20 agents' queues; heartbeat latency, dispatch
  latency (POST experiment -> the task reaches its agent's consumer), and ingestion (the agent's
  reporter, 4 batches in flight) while all of them heartbeat.
- **agent process**: a real ``python -m agents run``: seconds from spawn to its device online,
  and its resident memory (with children) once idle, before any job.

    python bench/control_plane.py [--quick] [--postgres URL] [--profile] [--only PART ...]
                                  [--web-processes N]
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.client import ControlPlane  # noqa: E402
from agents.reporter import IN_FLIGHT, HttpReporter  # noqa: E402
from agents.spool import Spool  # noqa: E402
from agents.stack import StackError  # noqa: E402
from agents.stack.redis import free_port  # noqa: E402
from agents.stack.up import Stack, StackOptions  # noqa: E402
from bench.lean_ws import LeanSocket, open_socket  # noqa: E402
from ml.cli import format_table  # noqa: E402

PARTS = ("ingestion", "fanout", "history", "list", "agents", "agent-process")
#: A job nobody runs: the bench plays the agent and only needs a started run to post to.
CONFIG = {"rounds": 1, "workers": 2, "dataset": "digits"}
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/test"
#: Devices posting at once in the second ingestion row of each database.
AGENTS_AT_ONCE = 4


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- a server ------------------------------------------------------------------------------------

@contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """A fresh database on the server of ``url``, dropped afterwards."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"estuary_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Server:
    """A started stack (no agents) and what the bench needs of it."""

    def __init__(self, database_url: str | None = None, heartbeat_s: int = 10,
                 web_processes: int | None = None):
        self.data_dir = Path(tempfile.mkdtemp(prefix="estuary-bench-"))
        env_before = dict(os.environ)
        os.environ["ESTUARY_HEARTBEAT_INTERVAL_S"] = str(heartbeat_s)
        if database_url:
            os.environ["DATABASE_URL"] = database_url
        else:
            os.environ.pop("DATABASE_URL", None)
        try:
            self.stack = Stack(StackOptions(root=ROOT, data_dir=self.data_dir, port=free_port(),
                                            demo=False, agents=(), web_processes=web_processes))
        finally:
            os.environ.clear()
            os.environ.update(env_before)
        self.extra: list[subprocess.Popen] = []
        #: ASGI processes on the stack's port (./estuary up's default unless given)
        self.processes = int(self.stack.env["ESTUARY_WEB_PROCESSES"])

    def __enter__(self) -> "Server":
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self.stack.start()
        self.url = self.stack.server
        self.token = self.stack.api.client.token
        self.enrol_token = self.stack.api.issue_enrolment_token(note="bench")
        return self

    def __exit__(self, *exc) -> None:
        for process in self.extra:
            process.terminate()
        for process in self.extra:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.stack.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://")

    def second_asgi(self) -> str:
        """Another daphne on the same database and Redis; its URL."""
        from agents.stack.api import wait_for_http

        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "controlplane.asgi:application"], cwd=ROOT, env=self.stack.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.extra.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/api/v1/", 90)
        return url

    def web_cpu_s(self) -> float:
        """CPU seconds the daphne processes (the stack's, with their launcher, and any
        :meth:`second_asgi`) have used so far (robust to a busy machine, unlike wall time)."""
        import psutil

        web = next(c for c in self.stack.supervisor.children if c.name == "web")
        total = 0.0
        for pid in [web.pid, *(process.pid for process in self.extra)]:
            process = psutil.Process(pid)
            for one in [process, *process.children(recursive=True)]:
                times = one.cpu_times()
                total += times.user + times.system
        return total

    def enrol(self, name: str, profile: str = "a6000-server") -> tuple[ControlPlane, dict]:
        client = ControlPlane(self.url)
        answer = client.enrol(self.enrol_token, name, profile, {})
        client.credential = answer["credential"]
        client.heartbeat([])
        return client, answer

    def started_run(self, client: ControlPlane, device_id: str, name: str = "bench") -> tuple[str, str]:
        """(experiment id, run id) of a new experiment hosted by the device, its job started."""
        experiment = self.stack.api.post("/api/v1/experiments/", {
            "name": name, "algorithm": "fedavg", "config": CONFIG, "preset": "local-3",
            "host": device_id})
        run = experiment["runs"][0]
        client.start_job(str(run["job"]["id"]) if isinstance(run.get("job"), dict)
                         else str(run["job"]))
        return str(experiment["id"]), str(run["id"])


def batch(name: str, first_step: int, size: int) -> list[dict]:
    now = time.time()
    return [{"name": name, "step": step, "value": 1.0 / (step + 1), "sim_time_s": float(step),
             "wall_time_s": now % 1e6} for step in range(first_step, first_step + size)]


# --- ingestion -----------------------------------------------------------------------------------

def ingestion(server: Server, batches: int, size: int = 200) -> dict:
    client, answer = server.enrol(f"ingest-{uuid.uuid4().hex[:6]}")
    _, run_id = server.started_run(client, answer["device_id"])
    client.post_metrics(run_id, batch("warm-up", 0, size))
    started = time.perf_counter()
    for _ in range(20):
        client.post_metrics(run_id, [])
    empty_ms = 1000 * (time.perf_counter() - started) / 20
    started = time.perf_counter()
    cpu = time.process_time()
    server_cpu = server.web_cpu_s()
    for index in range(batches):
        client.post_metrics(run_id, batch("loss", index * size, size))
    elapsed = time.perf_counter() - started
    server_cpu = server.web_cpu_s() - server_cpu
    resent = client.post_metrics(run_id, batch("loss", 0, size))  # stores nothing new
    stored = server.stack.api.get(f"/api/v1/runs/{run_id}/metrics/?name=loss")["points"]
    if len(stored) != batches * size or resent["accepted"] != size:
        raise StackError(f"stored {len(stored)} points, expected {batches * size}")
    return {"points": batches * size, "seconds": elapsed,
            "points_per_s": batches * size / elapsed,
            "ms_per_post": 1000 * elapsed / batches, "empty_ms": empty_ms,
            "client_cpu_s": time.process_time() - cpu,
            "server_cpu_ms_per_post": 1000 * server_cpu / batches}


def reporter_ingestion(server: Server, batches: int, in_flight: int, size: int = 200) -> dict:
    """One agent's reporter, ``in_flight`` batches of ``size`` at once, fed ``batches * size``
    points through ``metric()`` (each checked as the agent checks it) as fast as it takes them;
    timed from the first point to ``close()`` returning, when every batch is acknowledged."""
    from agents.tracker import RunningJob

    client, answer = server.enrol(f"reporter-{uuid.uuid4().hex[:6]}")
    _, run_id = server.started_run(client, answer["device_id"])
    client.post_metrics(run_id, batch("warm-up", 0, size))
    total = batches * size
    points = [(p["name"], p["step"], p["value"], p["sim_time_s"])
              for p in batch("loss", 0, total)]
    with tempfile.TemporaryDirectory(prefix="estuary-bench-spool-") as spool_dir:
        reporter = HttpReporter(client, run_id, RunningJob("bench", run_id),
                                Spool(Path(spool_dir)), batch_size=size, in_flight=in_flight)
        server_cpu = server.web_cpu_s()
        cpu = time.process_time()
        started = time.perf_counter()
        reporter.start()
        for point in points:
            reporter.metric(*point)
        all_sent = reporter.close()
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - cpu
        server_cpu = server.web_cpu_s() - server_cpu
    stored = server.stack.api.get(f"/api/v1/runs/{run_id}/metrics/?name=loss")["points"]
    if not all_sent or reporter.delivered != total or len(stored) != total:
        raise StackError(f"stored {len(stored)} points, expected {total}")
    return {"points": total, "seconds": elapsed, "points_per_s": total / elapsed,
            "client_cpu_ms_per_batch": 1000 * client_cpu / batches,
            "server_cpu_ms_per_post": 1000 * server_cpu / batches}


def concurrent_ingestion(server: Server, agents: int, batches: int, size: int = 200) -> dict:
    """``agents`` devices, each posting ``batches`` batches to its own run sequentially (one
    thread and keep-alive connection each, as an agent's reporter does), all at once."""
    devices = []
    for index in range(agents):
        client, answer = server.enrol(f"ingest-{index}-{uuid.uuid4().hex[:6]}")
        _, run_id = server.started_run(client, answer["device_id"], name=f"ingest-{index}")
        client.post_metrics(run_id, batch("warm-up", 0, size))
        devices.append((client, run_id))
    ready = threading.Barrier(agents + 1)
    failures: list[BaseException] = []

    def post_all(client: ControlPlane, run_id: str) -> None:
        ready.wait()
        try:
            for index in range(batches):
                client.post_metrics(run_id, batch("loss", index * size, size))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            failures.append(exc)

    threads = [threading.Thread(target=post_all, args=device) for device in devices]
    for thread in threads:
        thread.start()
    server_cpu = server.web_cpu_s()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    server_cpu = server.web_cpu_s() - server_cpu
    if failures:
        raise StackError(f"{len(failures)} agents failed: {failures[0]!r}")
    for client, run_id in devices:
        resent = client.post_metrics(run_id, batch("loss", 0, size))  # stores nothing new
        stored = server.stack.api.get(f"/api/v1/runs/{run_id}/metrics/?name=loss")["points"]
        if len(stored) != batches * size or resent["accepted"] != size:
            raise StackError(f"stored {len(stored)} points, expected {batches * size}")
    total = agents * batches * size
    return {"points": total, "seconds": elapsed, "points_per_s": total / elapsed,
            "server_cpu_ms_per_post": 1000 * server_cpu / (agents * batches)}


def profile_ingestion(server: Server, batches: int = 100, size: int = 200) -> str:
    """The same POSTs through Django in this process under cProfile: the top of the profile."""
    env_before = dict(os.environ)
    os.environ.update(server.stack.env)  # the server's settings, this process's Django
    import django

    try:
        django.setup()
    finally:  # later stacks of this bench must not inherit this one's Redis and database
        os.environ.clear()
        os.environ.update(env_before)
    from django.test import Client

    client, answer = server.enrol(f"profile-{uuid.uuid4().hex[:6]}")
    _, run_id = server.started_run(client, answer["device_id"])
    http = Client(HTTP_AUTHORIZATION=f"Device {client.credential}", HTTP_HOST="127.0.0.1")
    bodies = [json.dumps({"points": batch("loss", i * size, size)}) for i in range(batches)]
    for body in bodies[:3]:  # warm: imports, URL resolver, first connection
        http.post(f"/api/v1/runs/{run_id}/metrics/", body, content_type="application/json")
    profiler = cProfile.Profile()
    profiler.enable()
    for body in bodies[3:]:
        response = http.post(f"/api/v1/runs/{run_id}/metrics/", body,
                             content_type="application/json")
        assert response.status_code == 200, (response.status_code, response.content)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(r"controlplane|rest_framework/views|handlers/base|"
                                                r"middleware|sql/compiler|backends", 30)
    stats.sort_stats("tottime").print_stats(15)
    return out.getvalue()


# --- fan-out -------------------------------------------------------------------------------------

async def _watch(url: str, token: str) -> LeanSocket:
    """An open socket whose first message, the history, has arrived."""
    socket = await open_socket(url, {"Authorization": f"Token {token}"})
    while not socket.messages:
        if socket.close_code is not None:
            raise StackError(f"{url} closed with {socket.close_code} before its history")
        socket.changed.clear()
        await asyncio.wait_for(socket.changed.wait(), 60)
    assert json.loads(socket.messages[0][1])["type"] == "history"
    return socket


def _deliveries(socket: LeanSocket, sent: dict, expected: int, stats: dict) -> list[float]:
    """Latencies (s) of the socket's live batches (one per batch: its first point); counts
    its lost and duplicate points into ``stats``."""
    latencies, seen = [], set()
    for received, payload in socket.messages[1:]:
        event = json.loads(payload)
        if event["type"] != "points":
            continue
        for row in event["points"]:
            key = (event["run"], row[1])
            if key in seen:
                stats["duplicates"] += 1
                continue
            seen.add(key)
            if row[1] % 20 == 0:
                latencies.append(received - sent[key])
    stats["lost"] += expected - len(seen)
    return latencies


def fanout(server: Server, experiments: int, sockets_per: int, batches: int,
           interval_s: float, second_url: str | None = None) -> dict:
    """``experiments`` live at once, ``sockets_per`` sockets each; each device posts ``batches``
    batches of 20 points every ``interval_s``; latencies of every delivery, the POSTs' round
    trips, the server's CPU per delivered message and the client's own CPU (its event loop's
    thread). With ``second_url``, every other socket is on that process, and so are the POSTs
    of every other device (each device keeps to one process, as behind a load balancer)."""
    size = 20
    runs = []
    for index in range(experiments):
        client, answer = server.enrol(f"fan-{uuid.uuid4().hex[:6]}")
        experiment_id, run_id = server.started_run(client, answer["device_id"], f"fan {index}")
        if second_url and index % 2:
            client = ControlPlane(second_url, credential=client.credential)
        runs.append((client, experiment_id, run_id))
    sent: dict[tuple[str, int], float] = {}
    answered: list[float] = []  # POST round trips
    errors: list[str] = []

    def post(client: ControlPlane, run_id: str) -> None:
        try:
            for index in range(batches):
                points = batch("loss", index * size, size)
                sent[(run_id, index * size)] = started = time.time()
                client.post_metrics(run_id, points)
                answered.append(time.time() - started)
                time.sleep(interval_s)
        except Exception as exc:  # noqa: BLE001
            errors.append(str(exc))

    async def main() -> tuple[list[LeanSocket], dict]:
        urls = []
        for e_index, (_, experiment_id, _) in enumerate(runs):
            for s_index in range(sockets_per):
                base = server.ws
                if second_url and (e_index * sockets_per + s_index) % 2:
                    base = second_url.replace("http://", "ws://")
                urls.append(f"{base}/ws/experiments/{experiment_id}/")
        sockets = await asyncio.gather(*(_watch(url, server.token) for url in urls))
        threads = [threading.Thread(target=post, args=(client, run_id))
                   for client, _, run_id in runs]
        cpu = {"server": server.web_cpu_s(), "client": time.thread_time(),
               "wall": time.monotonic()}
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            await asyncio.sleep(0.1)
        # Every socket has all its batches, or nothing came for 10 s (the rest is lost).
        last, count = time.monotonic(), 0
        while time.monotonic() - last < 10:
            now = sum(len(socket.messages) for socket in sockets)
            if all(len(socket.messages) > batches or socket.close_code is not None
                   for socket in sockets):
                break
            if now != count:
                last, count = time.monotonic(), now
            await asyncio.sleep(0.05)
        cpu = {"server": server.web_cpu_s() - cpu["server"],
               "client": time.thread_time() - cpu["client"],
               "wall": time.monotonic() - cpu["wall"]}
        for socket in sockets:
            socket.close()
        return sockets, cpu

    sockets, cpu = asyncio.run(main())
    if errors:
        raise StackError(f"posting failed: {errors[0]}")
    stats = {"lost": 0, "duplicates": 0}
    latencies = [value for socket in sockets
                 for value in _deliveries(socket, sent, batches * size, stats)]
    ms = [1000 * value for value in latencies]
    return {"deliveries": len(ms), "p50": statistics.median(ms), "p95": percentile(ms, 0.95),
            "max": max(ms), **stats, "post_p95": 1000 * percentile(answered, 0.95),
            "server_us": 1e6 * cpu["server"] / max(1, len(ms)),
            "acks": sum(socket.acks for socket in sockets),
            "client_core": cpu["client"] / cpu["wall"]}


# --- long history --------------------------------------------------------------------------------

def long_history(server: Server, total: int, series: int = 4) -> dict:
    import psycopg  # noqa: F401  (PostgreSQL only; SQLite needs nothing)

    client, answer = server.enrol(f"history-{uuid.uuid4().hex[:6]}")
    experiment_id, run_id = server.started_run(client, answer["device_id"], "long history")
    _insert_points(server, run_id, total, series)

    async def open_history() -> tuple[float, int, int]:
        from websockets.asyncio.client import connect

        started = time.perf_counter()
        async with connect(f"{server.ws}/ws/experiments/{experiment_id}/",
                           additional_headers={"Authorization": f"Token {server.token}"},
                           max_size=None, open_timeout=60) as socket:
            raw = await asyncio.wait_for(socket.recv(), 120)
            history = json.loads(raw)
            elapsed = time.perf_counter() - started
        return elapsed, len(raw), sum(len(rows) for rows in history["points"].values())

    opened = [asyncio.run(open_history()) for _ in range(3)]
    seconds = statistics.median(o[0] for o in opened)
    api = server.stack.api
    started = time.perf_counter()
    sampled = api.get(f"/api/v1/runs/{run_id}/metrics/?name=m0&buckets=1000")
    api_s = time.perf_counter() - started
    per_series = total // series
    started = time.perf_counter()
    zoomed = api.get(f"/api/v1/runs/{run_id}/metrics/?name=m0&from_step={per_series // 2}"
                     f"&to_step={per_series // 2 + 1999}")
    zoom_s = time.perf_counter() - started
    assert len(zoomed["points"]) == 2000, len(zoomed["points"])
    return {"points": total, "open_s": seconds, "history_bytes": opened[0][1],
            "history_points": opened[0][2], "api_downsampled_s": api_s,
            "api_downsampled_points": len(sampled["points"]), "api_zoom_s": zoom_s}


def _insert_points(server: Server, run_id: str, total: int, series: int) -> None:
    """``total`` points in ``series`` series straight into the database (not the measured path)."""
    url = server.stack.env.get("DATABASE_URL")
    per = total // series
    rows = ((f"m{s}", step, (step % 977) / 977 + s, float(step), float(step) / 10)
            for s in range(series) for step in range(per))
    started = time.perf_counter()
    if url:
        import psycopg

        with psycopg.connect(url) as conn, conn.cursor() as cursor:
            with cursor.copy("COPY metrics_metricpoint (run_id, name, step, value, sim_time_s, "
                             "wall_time_s) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((run_id, *row))
    else:
        import sqlite3

        conn = sqlite3.connect(server.data_dir / "estuary.sqlite3", timeout=30)
        with conn:
            conn.executemany("INSERT INTO metrics_metricpoint (run_id, name, step, value, "
                             "sim_time_s, wall_time_s) VALUES (?, ?, ?, ?, ?, ?)",
                             ((uuid.UUID(run_id).hex, *row) for row in rows))
        conn.close()
    log(f"inserted {total:,} points in {time.perf_counter() - started:.1f}s")
    # Points stored other than by ingestion: their blocks (controlplane.metrics.blocks) are
    # computed as the migration does, in a Django process on the server's settings.
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import django; django.setup(); "
                    "from controlplane.metrics import blocks; "
                    f"blocks.rebuild(['{run_id}'])"], cwd=ROOT, check=True,
                   env=dict(server.stack.env, DJANGO_SETTINGS_MODULE="controlplane.settings"))
    log(f"their blocks rebuilt in {time.perf_counter() - started:.1f}s")


# --- list of experiments ------------------------------------------------------------------------

def experiment_list(server: Server, experiments: int, clients: int, gets: int) -> dict:
    """The owner's list read by ``clients`` at once, twice: while all ``experiments`` wait in
    one device's queue (each run's queue reason is worked out for the page), then once all
    have finished. ``{"queued": figures, "finished": figures}``."""
    from agents.heartbeat import Heartbeat
    from agents.tracker import JobTracker

    client, answer = server.enrol(f"list-{uuid.uuid4().hex[:6]}")
    beat = Heartbeat(client, JobTracker(threading.Event()), 2.0)  # online: its jobs stay queued
    beat.start()
    try:
        return _queued_then_finished(server, client, answer["device_id"], experiments, clients,
                                     gets)
    finally:
        beat.stop()


def _queued_then_finished(server: Server, client: ControlPlane, device_id: str,
                          experiments: int, clients: int, gets: int) -> dict:
    jobs = []
    for index in range(experiments):
        experiment = server.stack.api.post("/api/v1/experiments/", {
            "name": f"listed {index}", "algorithm": "fedavg", "config": CONFIG,
            "preset": "local-3", "host": device_id})
        job = experiment["runs"][0]["job"]
        jobs.append(str(job["id"] if isinstance(job, dict) else job))
    queued = _read_list(server, clients, gets)
    for job_id in jobs:
        client.start_job(job_id)
        client.finish_job(job_id, "succeeded", result={})
    return {"queued": queued, "finished": _read_list(server, clients, gets)}


def _read_list(server: Server, clients: int, gets: int) -> dict:
    import requests

    url = f"{server.url}/api/v1/experiments/"
    latencies: list[float] = []
    sizes: list[int] = []
    errors: list[str] = []
    start = threading.Barrier(clients)

    def reader() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {server.token}"
        try:
            session.get(url, timeout=120).raise_for_status()  # the connection, not measured
            start.wait()
            for _ in range(gets):
                began = time.perf_counter()
                response = session.get(url, timeout=120)
                latencies.append(time.perf_counter() - began)
                response.raise_for_status()
                sizes.append(len(response.content))
        except Exception as exc:  # noqa: BLE001
            errors.append(str(exc))

    threads = [threading.Thread(target=reader) for _ in range(clients)]
    started = time.perf_counter()
    cpu = server.web_cpu_s()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu = server.web_cpu_s() - cpu
    if errors:
        raise StackError(f"listing failed: {errors[0]}")
    page = server.stack.api.get("/api/v1/experiments/")
    ms = [1000 * value for value in latencies]
    return {"gets": len(ms), "p50": statistics.median(ms), "p95": percentile(ms, 0.95),
            "max": max(ms), "kb": statistics.median(sizes) / 1e3, "count": page["count"],
            "on_page": len(page["results"]), "per_s": len(ms) / wall,
            "cpu_ms": 1000 * cpu / len(ms)}


# --- many agents ---------------------------------------------------------------------------------

ARRIVALS_KEY = "estuary.bench.arrivals"


def consume(broker_url: str, queues: list[str]) -> None:
    """A real Celery consumer of ``estuary.run_job`` on a group of agents' queues, in this
    process's main thread (admin login: one device's broker user reaches only its own queue).
    Each task's arrival time goes to a Redis hash the bench reads."""
    import redis
    from celery import Celery

    store = redis.Redis.from_url(broker_url)
    app = Celery("bench-consumer", broker=broker_url, set_as_current=False, fixups=[])
    app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
                    worker_enable_remote_control=False)

    @app.task(name="estuary.run_job")
    def run_job(job_id: str) -> None:
        store.hset(ARRIVALS_KEY, job_id, repr(time.time()))

    app.WorkController(hostname=f"bench-{uuid.uuid4().hex[:6]}@localhost", queues=queues,
                       pool_cls="solo", concurrency=1, loglevel="WARNING", without_gossip=True,
                       without_mingle=True, without_heartbeat=True, task_events=False).start()


def many_agents(server: Server, count: int, group_size: int, experiments: int,
                ingest_batches: int) -> dict:
    from agents.heartbeat import Heartbeat
    from agents.tracker import JobTracker

    agents: list[tuple[ControlPlane, dict]] = []
    started = time.perf_counter()
    for index in range(count):
        agents.append(server.enrol(f"sim-{index:03d}-{uuid.uuid4().hex[:4]}", "jetson-nx"))
    enrol_s = time.perf_counter() - started
    beat_ms: list[float] = []
    lock = threading.Lock()

    class TimedHeartbeat(Heartbeat):
        def beat(self) -> None:
            began = time.perf_counter()
            super().beat()
            with lock:
                beat_ms.append(1000 * (time.perf_counter() - began))

    beats = [TimedHeartbeat(client, JobTracker(threading.Event()), 2.0) for client, _ in agents]
    for beat in beats:
        beat.start()
    import redis

    redis_url = server.stack.env["REDIS_URL"]
    store = redis.Redis.from_url(redis_url)
    env = dict(server.stack.env, BENCH_BROKER_URL=redis_url)
    groups = [subprocess.Popen(
        [sys.executable, __file__, "--consume", *[a["queue"] for _, a in agents[i:i + group_size]]],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(0, count, group_size)]
    time.sleep(10)  # the consumers start (imports, broker connections)
    dispatch_ms = []
    try:
        for index in range(experiments):
            client, answer = agents[(index * 37) % count]
            sent = time.time()
            experiment = server.stack.api.post("/api/v1/experiments/", {
                "name": f"dispatch {index}", "algorithm": "fedavg", "config": CONFIG,
                "preset": "local-3", "host": answer["device_id"]})
            job = experiment["runs"][0]["job"]
            job_id = str(job["id"] if isinstance(job, dict) else job)
            deadline = time.monotonic() + 60
            while (arrived := store.hget(ARRIVALS_KEY, job_id)) is None:
                if time.monotonic() > deadline:
                    raise StackError(f"job {job_id} never reached its consumer")
                time.sleep(0.005)
            dispatch_ms.append(1000 * (float(arrived) - sent))
        beats_before = len(beat_ms)
        # As an agent sends: its reporter, IN_FLIGHT batches at once.
        ingest = reporter_ingestion(server, ingest_batches, IN_FLIGHT)
        window = beat_ms[beats_before:]
    finally:
        for beat in beats:
            beat.stop()
        for group in groups:
            group.terminate()
        for group in groups:
            try:
                group.wait(10)
            except subprocess.TimeoutExpired:
                group.kill()
    return {"agents": count, "consumers": len(groups), "enrol_s": enrol_s,
            "beat_p50": statistics.median(window), "beat_p95": percentile(window, 0.95),
            "beats": len(window), "dispatch_p50": statistics.median(dispatch_ms),
            "dispatch_p95": percentile(dispatch_ms, 0.95), "ingest": ingest}


# --- the agent process ---------------------------------------------------------------------------

def agent_process(server: Server) -> dict:
    import psutil

    token_file = server.data_dir / "agent-token"
    token_file.write_text(server.enrol_token)
    name = f"real-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in server.stack.env.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "SECRET_KEY")}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "agents", "run", "--server", server.url, "--token-file",
         str(token_file), "--name", name, "--profile", "jetson-orin-nano", "--state-dir",
         str(server.data_dir / "agent-state")], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server.stack.api.wait_for_devices([name], 120)
        online_s = time.perf_counter() - started
        time.sleep(5)  # idle: its worker consumes, heartbeats go on
        parent = psutil.Process(process.pid)
        rss = parent.memory_info().rss + sum(c.memory_info().rss
                                             for c in parent.children(recursive=True))
        torch_loaded = "torch" in _loaded_modules(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    return {"online_s": online_s, "rss_mib": rss / 2**20, "torch_loaded": torch_loaded}


def _loaded_modules(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


# --- main ----------------------------------------------------------------------------------------

def main() -> int:
    if sys.argv[1:2] == ["--consume"]:  # a consumer group of the many-agents part
        consume(os.environ["BENCH_BROKER_URL"], sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES", DEFAULT_POSTGRES),
                        help="PostgreSQL server for the second ingestion run ('' to skip)")
    parser.add_argument("--profile", action="store_true", help="cProfile the ingestion path")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    parser.add_argument("--web-processes", type=int, default=None, help=(
        "ASGI processes on the stack's port (default: ./estuary up's, 2 on 2 cores or more)"))
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    parts = args.only or PARTS
    quick = args.quick
    rows: list[tuple] = []
    profile = None

    def row(part: str, what: str, figure: str, goal: str) -> None:
        rows.append((part, what, figure, goal))
        log(f"{part}: {what}: {figure}")

    def history_rows(server: Server, total: int, database: str) -> None:
        result = long_history(server, total)
        row("long history", f"{database}: open a run of {total:,} points (WebSocket)",
            f"{result['open_s']:.2f} s, {result['history_points']:,} points, "
            f"{result['history_bytes'] / 1e3:,.0f} kB", "< 2 s")
        row("long history", f"{database}: API 1 series downsampled / 2,000-step zoom",
            f"{result['api_downsampled_s'] * 1000:.0f} ms "
            f"({result['api_downsampled_points']} points) / {result['api_zoom_s'] * 1000:.0f} ms",
            "same rule")

    def reporter_rows(server: Server, database: str) -> None:
        for in_flight in (IN_FLIGHT, 1):
            result = reporter_ingestion(server, 50 if quick else 250, in_flight)
            row("ingestion", f"{database}, 1 agent's reporter, batches of 200, {in_flight} in "
                "flight", f"{result['points_per_s']:,.0f} points/s (daphne CPU "
                f"{result['server_cpu_ms_per_post']:.1f} ms/POST; agent CPU "
                f"{result['client_cpu_ms_per_batch']:.1f} ms/batch)", ">= 20,000 points/s")

    with Server(web_processes=args.web_processes) as server:
        if "ingestion" in parts:
            reporter_rows(server, "SQLite")
            result = concurrent_ingestion(server, AGENTS_AT_ONCE, 25 if quick else 250)
            row("ingestion", f"SQLite, {AGENTS_AT_ONCE} agents at once, batches of 200",
                f"{result['points_per_s']:,.0f} points/s (daphne CPU "
                f"{result['server_cpu_ms_per_post']:.1f} ms/POST)", ">= 20,000 points/s")
            if args.profile:
                profile = profile_ingestion(server, 30 if quick else 100)
        if "fanout" in parts:
            count, batches = (20, 10) if quick else (100, 50)
            experiments = 5 if quick else 20

            def fanout_row(what: str, result: dict, goal: str = "p95 < 100 ms") -> None:
                row("fan-out", what,
                    f"p50 {result['p50']:.0f} ms, p95 {result['p95']:.0f} ms, max "
                    f"{result['max']:.0f} ms; lost {result['lost']}, dup {result['duplicates']}; "
                    f"POST answered p95 {result['post_p95']:.0f} ms; daphne CPU "
                    f"{result['server_us']:.0f} us/message ({result['acks']} acks); client "
                    f"{100 * result['client_core']:.1f}% of a core", goal)

            on = f"{server.processes} process{'es' if server.processes > 1 else ''}"
            fanout_row(f"{count} sockets, 1 experiment, {on}",
                       fanout(server, 1, count, batches, 0.1))
            fanout_row(f"{experiments} experiments x 5 sockets, {on}",
                       fanout(server, experiments, 5, batches, 0.5))
            second = server.second_asgi()
            fanout_row(f"{count} sockets over {on} + 1 on another port",
                       fanout(server, 1, count, batches, 0.1, second_url=second),
                       "works; p95 < 100 ms")
            fanout_row(f"{experiments} experiments x 5 sockets over {on} + 1 on another port",
                       fanout(server, experiments, 5, batches, 0.5, second_url=second),
                       "works; p95 < 100 ms")
        if "history" in parts:
            history_rows(server, 100_000 if quick else 1_000_000, "SQLite")
        if "list" in parts:
            gets = 10 if quick else 50
            results = experiment_list(server, 66, 20, gets)
            for state, result in results.items():
                row("list", f"{result['count']} experiments {state}, 20 clients x {gets} GETs "
                    f"(first page), {server.processes} ASGI process(es)",
                    f"p50 {result['p50']:.0f} ms, p95 {result['p95']:.0f} ms, max "
                    f"{result['max']:.0f} ms; {result['on_page']} per page, {result['kb']:.0f} "
                    f"kB; {result['per_s']:.0f} GETs/s; daphne CPU {result['cpu_ms']:.0f} ms/GET",
                    "p95 < 100 ms with pagination")
        if "agent-process" in parts:
            result = agent_process(server)
            row("agent process", "spawn -> online; RSS idle before any job",
                f"{result['online_s']:.1f} s; {result['rss_mib']:.0f} MiB "
                f"(torch loaded: {result['torch_loaded']})", "fits a 4 GB device")

    if "agents" in parts:
        with Server(heartbeat_s=2) as server:
            count = 40 if quick else 200
            result = many_agents(server, count, 20, 5 if quick else 20, 10 if quick else 100)
            row("many agents", f"{count} agents, {result['consumers']} Celery consumers: heartbeat",
                f"p50 {result['beat_p50']:.0f} ms, p95 {result['beat_p95']:.0f} ms "
                f"({result['beats']} beats)", "")
            row("many agents", "dispatch: POST -> task at its consumer",
                f"p50 {result['dispatch_p50']:.0f} ms, p95 {result['dispatch_p95']:.0f} ms", "")
            row("many agents", f"ingestion with all heartbeating ({IN_FLIGHT} batches in flight)",
                f"{result['ingest']['points_per_s']:,.0f} points/s", ">= 20,000 points/s")

    if ("ingestion" in parts or "history" in parts) and args.postgres:
        with postgres_database(args.postgres) as url, Server(database_url=url) as server:
            if "ingestion" in parts:
                reporter_rows(server, "PostgreSQL")
                result = concurrent_ingestion(server, AGENTS_AT_ONCE, 25 if quick else 250)
                row("ingestion", f"PostgreSQL, {AGENTS_AT_ONCE} agents at once, batches of 200",
                    f"{result['points_per_s']:,.0f} points/s (daphne CPU "
                    f"{result['server_cpu_ms_per_post']:.1f} ms/POST)", ">= 20,000 points/s")
            if "history" in parts:
                history_rows(server, 100_000 if quick else 1_000_000, "PostgreSQL")

    if profile:
        print("\ncProfile of the ingestion path (in-process POSTs, cumulative):")
        print(profile)
    mode = "quick" if quick else "full"
    print(f"\nControl plane at testbed scale ({mode}; daphne, DEBUG off, "
          f"{os.cpu_count()} CPUs, load average at the start {load_at_start:.1f}, at the end "
          f"{os.getloadavg()[0]:.1f})")
    print(format_table(("part", "what", "measured", "goal"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
