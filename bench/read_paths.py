"""CPU per request of two read paths of the control plane (issue #20), in one process.

- **catalogue**: ``GET /api/v1/algorithms/`` (the dashboard's launch form; ~200 kB) through
  Django's test client with an API token: kept rendered (the process's second and later GETs),
  built afresh (the process's kept catalogue cleared before each GET, as every GET cost before
  it was kept), a revalidation answered 304, and the whole catalogue in one page.
- **lists**: the owner's ``GET /api/v1/experiments/`` (66 experiments queued on one online
  device, the first page of 50: every run's queue reason is worked out) and ``/api/v1/runs/``:
  kept rendered between writes (controlplane.experiments.reads) and built afresh (the view's
  kept pages cleared before each GET, as every GET cost before they were kept).
- **ASGI**: a small request through the control plane's ASGI handler
  (:class:`controlplane.asgi_http.SyncChainASGIHandler`) driven in this process's event loop:
  an owner's GET of one of their runs (no jobs yet) on the ``reads`` database lane; and one URL
  resolution alone of that path and of its ``metrics/`` (the handler resolves each request's
  path twice: to choose its lane, then in Django's handler).

Figures are the process's CPU time (``time.process_time``) per request, the median of
``--repeats`` rounds of ``--n`` requests; a busy machine inflates them less than wall time. The
database is a fresh test database: SQLite in memory, or ``test_<name>`` on ``DATABASE_URL``'s
server (dropped afterwards).

    DATABASE_URL=postgres://... python bench/read_paths.py [--quick] [--n 200] [--repeats 5]
                                                           [--only catalogue|lists|asgi]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.urls import get_resolver  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from controlplane.asgi_http import SyncChainASGIHandler  # noqa: E402
from controlplane.db_lane import LANE_THREADS, lane  # noqa: E402
from controlplane.experiments.models import Experiment, Run  # noqa: E402
from ml.registry import load_all  # noqa: E402

try:
    from controlplane.experiments.catalogue import catalogue
except ImportError:  # before the catalogue was kept
    catalogue = None


def cpu_ms(fn, n: int, repeats: int) -> float:
    """Median over ``repeats`` of the CPU milliseconds per call of ``fn`` over ``n`` calls."""
    fn()  # warm
    rounds = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(n):
            fn()
        rounds.append((time.process_time() - start) / n * 1000)
    return statistics.median(rounds)


def catalogue_rows(token: str, n: int, repeats: int) -> list[tuple[str, float, int]]:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    url = "/api/v1/algorithms/"
    first = client.get(url)
    assert first.status_code == 200, first.content
    etag = first.get("ETag")
    rows = []

    def get(path: str = url, status: int = 200, **extra) -> None:
        assert client.get(path, **extra).status_code == status

    rows.append(("GET /api/v1/algorithms/", cpu_ms(get, n, repeats), len(first.content)))

    if catalogue is not None:
        def built() -> None:
            catalogue.clear()
            get()
        rows.append(("  built afresh each GET", cpu_ms(built, max(n // 10, 5), repeats),
                     len(first.content)))
    if etag:
        rows.append(("  If-None-Match: 304", cpu_ms(
            lambda: get(status=304, HTTP_IF_NONE_MATCH=etag), n, repeats), 0))
    whole = client.get(url + "?page_size=500")
    rows.append(("GET ...?page_size=500", cpu_ms(lambda: get(url + "?page_size=500"), n,
                                                 repeats), len(whole.content)))
    return rows


def list_rows(user: User, token: str, n: int, repeats: int) -> list[tuple[str, float, int]]:
    from django.test import RequestFactory

    from controlplane.devices.actions import create_enrolment_token, enrol_device
    from controlplane.experiments.actions import create_experiment
    from controlplane.experiments.serializers import ExperimentCreateSerializer
    from controlplane.experiments.views import ExperimentViewSet, RunViewSet

    _, secret = create_enrolment_token(user, 1)
    device = enrol_device(secret, "bench-device", "h100", {}).device
    request = RequestFactory().post("/")
    request.user = user
    for index in range(66):
        created = ExperimentCreateSerializer(data={
            "name": f"listed {index}", "algorithm": "fedavg", "config": {},
            "preset": "local-3", "host": str(device.id)}, context={"request": request})
        created.is_valid(raise_exception=True)
        create_experiment(user, created.validated_data["plan"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    rows = []
    for url, view in (("/api/v1/experiments/", ExperimentViewSet), ("/api/v1/runs/", RunViewSet)):
        size = len(client.get(url).content)

        def get(path: str = url) -> None:
            assert client.get(path).status_code == 200

        def built(path: str = url, view=view) -> None:
            view.page_cache.clear()
            get(path)

        rows.append((f"GET {url} (66 queued, page of 50)", cpu_ms(get, n, repeats), size))
        rows.append(("  built afresh each GET", cpu_ms(built, max(n // 5, 5), repeats), size))
    return rows


def close_lane_connections(name: str) -> None:
    """Close the connections of every thread of lane ``name`` (one call on each: they wait for
    each other), so that the test database can be dropped."""
    threads = settings.ESTUARY[LANE_THREADS[name]]
    barrier = threading.Barrier(threads, timeout=30)

    def close() -> None:
        barrier.wait()
        connections.close_all()

    for future in [lane(name).submit(close) for _ in range(threads)]:
        future.result()


def asgi_rows(token: str, run_id: str, n: int, repeats: int) -> list[tuple[str, float, int]]:
    handler = SyncChainASGIHandler()
    path = f"/api/v1/runs/{run_id}/"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
             "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"authorization", f"Token {token}".encode())]}
    loop = asyncio.new_event_loop()
    sizes = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def one() -> None:
        sent = []

        async def send(message: dict) -> None:
            sent.append(message)

        await handler(scope, receive, send)
        assert sent[0]["status"] == 200, sent
        sizes.append(len(sent[-1].get("body", b"")))

    async def many(count: int) -> None:
        for _ in range(count):
            await one()

    rounds = []
    loop.run_until_complete(many(20))  # warm: the lane's threads and connections
    for _ in range(repeats):
        start = time.process_time()
        loop.run_until_complete(many(n))
        rounds.append((time.process_time() - start) / n * 1000)
    close_lane_connections("reads")
    loop.close()
    resolver = get_resolver()
    return [("GET /api/v1/runs/<id>/ via ASGI", statistics.median(rounds), sizes[-1])] + [
        (f"  resolving {name} once", cpu_ms(lambda: resolver.resolve(url), n * 20, repeats), 0)
        for name, url in [("its path", path), (".../metrics/", f"{path}metrics/")]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 requests per round, 3 rounds")
    parser.add_argument("--n", type=int, default=None, help="requests per round (200)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds, the median shown (5)")
    parser.add_argument("--only", choices=["catalogue", "lists", "asgi"], help="one part only")
    args = parser.parse_args()
    args.n = args.n or (50 if args.quick else 200)
    args.repeats = args.repeats or (3 if args.quick else 5)
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        user = User.objects.create(username="bench", password="!")
        token = Token.objects.create(user=user).key
        experiment = Experiment.objects.create(owner=user, name="bench", algorithm="fedavg",
                                               config={}, methods=["fedavg"], testbed="jetson80")
        run = Run.objects.create(experiment=experiment, position=0, method="fedavg", config={})
        load_all()
        gc.collect()
        gc.freeze()  # as controlplane/asgi.py does after start-up
        rows = []
        if args.only in (None, "catalogue"):
            rows += catalogue_rows(token, args.n, args.repeats)
        if args.only in (None, "lists"):
            rows += list_rows(user, token, args.n, args.repeats)
        if args.only in (None, "asgi"):
            rows += asgi_rows(token, str(run.id), args.n, args.repeats)
    finally:
        connections.close_all()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"(database: {connection.vendor})")
    print(f"{'request':52} {'CPU ms/req':>10} {'bytes':>8}")
    for name, ms, size in rows:
        print(f"{name:52} {ms:10.3f} {size:8d}")


if __name__ == "__main__":
    main()
