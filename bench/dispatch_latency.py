"""Dispatch latency: time from ``POST /api/v1/experiments/`` to the first metric point stored.

Starts the real pieces as separate processes, as ``./estuary up`` does (``agents.stack``): a
Redis of its own (unless ``REDIS_URL`` is set), SQLite in a temporary data folder (unless
``DATABASE_URL`` is set), daphne, the control plane's Celery worker with beat, and ONE agent
(an A6000 server profile). Then it launches N tiny FedAvg experiments (1 round, 2 workers,
sklearn digits) one after the other through the REST API, each hosted by that agent, and
waits for each to finish before the next.

What is measured, per experiment, on this machine's clock (client and server share it):
- ``post``: the POST's round trip (validation, the Run and Job rows, the Celery message);
- ``start``: POST sent -> the job's ``started_at`` (the agent took the task from its queue and
  claimed the job through ``start/``; stamped by the server);
- ``first point``: POST sent -> the first MetricPoint row of the run is visible in the
  database. The script polls the database directly through the ORM every 10 ms (not the
  metrics API, which would add HTTP load on the server being measured), so figures are
  late by at most ~10 ms. The first points of FedAvg come after its first round, so this
  includes loading the data, building the model and one round of real training.

Every experiment counts, the first one too, although it pays the agent's cold start (its Celery
worker may still be connecting; the first job imports the catalogue and caches the data); the
table adds a row without it.

    python bench/dispatch_latency.py [--quick] [-n N] [--keep]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.stack import StackError  # noqa: E402
from agents.stack.redis import free_port  # noqa: E402
from agents.stack.up import Stack, StackOptions  # noqa: E402
from ml.cli import format_table  # noqa: E402

AGENT = ("bench-a6000", "a6000-server")
#: A FedAvg that ends fast: its first (and only) round is what the first points wait for.
CONFIG = {"rounds": 1, "workers": 2, "dataset": "digits", "eval_every": 1}
POLL_S = 0.01
FINISHED = {"succeeded", "failed", "cancelled"}


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between order statistics."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure_one(stack: Stack, device_id: str, index: int, timeout_s: float) -> dict[str, float]:
    """Launch one experiment; seconds from the POST to its job's start and to its first point."""
    from controlplane.experiments.models import Job
    from controlplane.metrics.models import MetricPoint

    body = {"name": f"dispatch latency {index}", "algorithm": "fedavg", "config": CONFIG,
            "preset": "local-3", "host": device_id}
    sent = time.time()
    experiment = stack.api.post("/api/v1/experiments/", body)
    answered = time.time()
    run_id = experiment["runs"][0]["id"]
    deadline = time.monotonic() + timeout_s
    points = MetricPoint.objects.filter(run_id=run_id)
    while not points.exists():
        if time.monotonic() > deadline:
            raise StackError(f"no metric point for run {run_id} after {timeout_s:.0f}s")
        time.sleep(POLL_S)
    first_point = time.time()
    # Sequential experiments: wait for this one to end before the next is launched.
    while (job := Job.objects.get(run_id=run_id)).state not in FINISHED:
        if time.monotonic() > deadline:
            raise StackError(f"job {job.id} still {job.state} after {timeout_s:.0f}s")
        time.sleep(0.05)
    if job.state != "succeeded":
        raise StackError(f"job {job.id} {job.state}: {job.error}")
    return {"post": answered - sent, "start": job.started_at.timestamp() - sent,
            "first point": first_point - sent}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 experiments instead of 20")
    parser.add_argument("-n", type=int, help="number of experiments (overrides --quick)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary data folder (database, logs)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed per experiment")
    args = parser.parse_args()
    count = args.n or (5 if args.quick else 20)

    data_dir = Path(tempfile.mkdtemp(prefix="estuary-bench-"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the children share a small machine
    stack = Stack(StackOptions(root=ROOT, data_dir=data_dir, port=free_port(), demo=False,
                               agents=(AGENT,)))
    failed = False
    samples: list[dict[str, float]] = []
    try:
        stack.start()
        # This process reads the stack's database: same settings as its children.
        os.environ.update({k: v for k, v in stack.env.items()
                           if k in ("DATABASE_URL", "ESTUARY_DATA_DIR", "REDIS_URL",
                                    "DJANGO_SETTINGS_MODULE")})
        import django

        django.setup()
        device_id = stack.devices[AGENT[0]]["id"]
        for index in range(1, count + 1):
            sample = measure_one(stack, device_id, index, args.timeout)
            samples.append(sample)
            print(f"experiment {index}/{count}: " + ", ".join(
                f"{key} {value * 1000:.0f} ms" for key, value in sample.items()),
                file=sys.stderr, flush=True)
    except (StackError, KeyboardInterrupt) as exc:
        print(f"error: {exc}; logs in {data_dir / 'log'}", file=sys.stderr)
        failed = True
    finally:
        stack.stop()
        if args.keep or failed:
            print(f"data folder kept: {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    if not samples:
        return 1

    rows = []
    series = [("POST round trip", "post", samples), ("POST -> start", "start", samples),
              ("POST -> first point", "first point", samples)]
    if len(samples) > 1:  # the first one pays the agent's cold start (imports, data cache)
        series.append(("  the same without the 1st", "first point", samples[1:]))
    for label, key, chosen in series:
        values = [sample[key] * 1000 for sample in chosen]
        rows.append((label, len(values), f"{statistics.median(values):.0f}",
                     f"{percentile(values, 0.9):.0f}", f"{min(values):.0f}",
                     f"{max(values):.0f}"))
    mode = "quick" if args.quick and not args.n else "full" if count == 20 else "custom"
    database = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "SQLite"
    print(f"\nDispatch latency, {len(samples)} sequential FedAvg experiments ({mode}; "
          f"config {CONFIG}, one agent, database {database})")
    print(format_table(("interval", "n", "median ms", "p90 ms", "min ms", "max ms"), rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
