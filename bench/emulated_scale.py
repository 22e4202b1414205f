"""Clients per round in the emulated runtime (issue #20): peak memory of one FedAvg round with
1,000 and 10,000 clients, and the cost of each client beyond the first thousand.

Every client trains every round (``clients_per_round=1``) on MNIST-5000's 4,000 training samples
shared as ``iid-repeated`` shards (one sample each at 10,000 clients: a permutation reused), with
cnn-small. ``--partition iid`` splits them without repetition instead, which MNIST-5000 allows up
to 4,000 clients. The run is ``python -m ml run fedavg`` in a child process; its wall time, CPU
time and peak resident memory (``ru_maxrss``) are what the table shows. The goal: 10,000
clients within 4 GiB.

What a client costs (cnn-small, 841 KiB of weights): the model, its optimiser state and the data
are shared by all clients of a process (one trainer per client thread, the data set once, a
shard is an index tensor); a client keeps its emulated device, its shard's indices, its shuffle
generator and its waiting-time series. The round's replies are taken one at a time
(``ml.distributed.runtime.results``); before that every client's returned model was held until
the round ended, ~0.9 MiB per client.

    python bench/emulated_scale.py [--quick] [--clients N ...] [--partition iid]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml.cli import format_table  # noqa: E402

CONFIG = {"dataset": "mnist-5000", "model": "cnn-small", "partition": "iid-repeated",
          "rounds": 1, "eval_every": 1, "momentum": 0.9, "clients_per_round": 1}


def run(clients: int, out: Path, partition: str = CONFIG["partition"]) -> dict:
    """One round with ``clients`` clients in a fresh child process."""
    command = [sys.executable, "-m", "ml", "run", "fedavg", "--quiet", "--out", str(out),
               "--set", f"workers={clients}"]
    for key, value in {**CONFIG, "partition": partition}.items():
        command += ["--set", f"{key}={value}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.read_text())["result"]
    return {"clients": clients, "wall_s": wall,
            "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "peak_mib": after.ru_maxrss / 1024,  # the largest child so far: runs go small first
            "accuracy": result["final"]["accuracy"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 and 2,000 clients")
    parser.add_argument("--clients", type=int, nargs="+", help="client counts, smallest first")
    parser.add_argument("--partition", default=CONFIG["partition"],
                        choices=("iid-repeated", "iid"),
                        help="iid-repeated (default) or iid (no sample shared: <= 4,000 clients)")
    args = parser.parse_args()
    counts = sorted(args.clients or ([200, 2000] if args.quick else [1000, 10_000]))
    results = []
    with tempfile.TemporaryDirectory(prefix="estuary-scale-") as tmp:
        for clients in counts:
            results.append(run(clients, Path(tmp) / f"{clients}.json", args.partition))
            print(f"{clients} clients: {results[-1]}", file=sys.stderr, flush=True)
    rows = []
    for result in results:
        rows.append((f"{result['clients']:,}", f"{result['wall_s']:.0f}", f"{result['cpu_s']:.0f}",
                     f"{result['peak_mib']:,.0f}", f"{result['accuracy']:.3f}"))
    first, last = results[0], results[-1]
    per_client_kib = ((last["peak_mib"] - first["peak_mib"]) * 1024
                      / max(last["clients"] - first["clients"], 1))
    mode = "quick" if args.quick else "full"
    print(f"\nOne FedAvg round, every client training (cnn-small, MNIST-5000 {args.partition} "
          f"shards; {mode}; load {os.getloadavg()[0]:.1f}). Memory per client beyond "
          f"{first['clients']:,}: {per_client_kib:.1f} KiB; goal: 10,000 clients within 4 GiB")
    print(format_table(("clients", "wall s", "CPU s", "peak MiB", "accuracy"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
