"""Overhead of Estuary's FedAvg over a plain PyTorch loop doing the same SGD steps.

Both sides train the same CNN from the same initial weights on the same MNIST-5000 shards of 20
workers, with the same batches in the same order (each worker shuffles with its own generator,
the convention of ``ml.fl.batches``), average by shard size and evaluate once at the end. The
plain loop is what one would write by hand: no testbed emulation, no worker objects, no
reporter. Both end with the same accuracy when they really did the same steps; the table says
so. Times are the minimum over interleaved repeats (the least disturbed run on a shared
machine), as wall time and as the process's CPU time (which other processes on a busy machine
disturb much less). Goal: ratio <= 1.15.

    python bench/ml_overhead.py [--quick] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from ml import registry  # noqa: E402
from ml.cli import format_table  # noqa: E402
from ml.data import load_dataset  # noqa: E402
from ml.data.partition import partition  # noqa: E402
from ml.method_run import generator, seeded_run  # noqa: E402
from ml.models import build_model  # noqa: E402
from ml.reporting import MemoryReporter  # noqa: E402

WORKERS = 20
SEED = 0


def fedavg_config(rounds: int) -> dict:
    return {"dataset": "mnist", "model": "cnn", "workers": WORKERS, "rounds": rounds,
            "local_epochs": 1, "batch_size": 32, "lr": 0.05, "partition": "iid",
            "eval_every": rounds, "seed": SEED, "testbed": "jetson80"}


def timed(fn, *args):
    """``(wall seconds, cpu seconds, fn's result)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run_fedavg(rounds: int) -> tuple[float, int]:
    """Final accuracy and SGD steps of Estuary's FedAvg."""
    method = registry.get("fedavg")
    reporter = MemoryReporter()
    method.run(method.parse_config(fedavg_config(rounds)), reporter)
    dataset = load_dataset("mnist", seed=SEED)
    shards = partition(dataset.train_y.numpy(), WORKERS, "iid", seed=SEED).indices
    steps = rounds * sum(-(-len(s) // 32) for s in shards)
    return reporter.last("accuracy"), steps


def run_plain(rounds: int) -> tuple[float, int]:
    """The same FedAvg written as a plain PyTorch loop: final accuracy and SGD steps."""
    dataset = load_dataset("mnist", seed=SEED)
    shards = [torch.from_numpy(s) for s in
              partition(dataset.train_y.numpy(), WORKERS, "iid", seed=SEED).indices]
    x, y = dataset.train_x, dataset.train_y
    with seeded_run(SEED, torch.device("cpu")):
        model = build_model("cnn", dataset.num_classes, dataset.input_shape)
        tensors = [*model.parameters(), *model.buffers()]
        global_weights = [t.detach().clone() for t in tensors]
        shufflers = [generator(SEED, "shuffle", k) for k in range(WORKERS)]
        sizes = [len(s) for s in shards]
        steps = 0
        for _ in range(rounds):
            sums = [torch.zeros_like(t, dtype=torch.float64) for t in tensors]
            for k, shard in enumerate(shards):
                with torch.no_grad():
                    for t, g in zip(tensors, global_weights):
                        t.copy_(g)
                optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
                for idx in shard[torch.randperm(len(shard), generator=shufflers[k])].split(32):
                    loss = F.cross_entropy(model(x[idx]), y[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    steps += 1
                with torch.no_grad():
                    for s, t in zip(sums, tensors):
                        s.add_(t, alpha=sizes[k])
            global_weights = [(s / sum(sizes)).float() for s in sums]
        with torch.no_grad():
            for t, g in zip(tensors, global_weights):
                t.copy_(g)
            model.eval()
            correct = (model(dataset.test_x).argmax(1) == dataset.test_y).sum().item()
    return correct / len(dataset.test_y), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 2 repeats (~1 minute)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, repeats = (1, 2) if args.quick else (5, 3)

    # Warm-up outside the timings: the catalogue's imports, the data cache, and torch's lazy
    # imports on the first optimiser.
    registry.load_all()
    load_dataset("mnist", seed=SEED)
    torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    times: dict[str, list[tuple[float, float]]] = {"plain": [], "fedavg": []}
    results = {}
    for i in range(repeats):
        for name, fn in (("plain", run_plain), ("fedavg", run_fedavg)):
            wall, cpu, results[name] = timed(fn, rounds)
            times[name].append((wall, cpu))
            print(f"repeat {i + 1}/{repeats}: {name:6s} wall {wall:.2f} s, cpu {cpu:.2f} s",
                  file=sys.stderr)

    (plain_acc, steps), (fedavg_acc, fedavg_steps) = results["plain"], results["fedavg"]
    plain_wall, plain_cpu = (min(t[j] for t in times["plain"]) for j in (0, 1))
    fedavg_wall, fedavg_cpu = (min(t[j] for t in times["fedavg"]) for j in (0, 1))
    rows = [(
        "quick" if args.quick else "full", WORKERS, rounds, steps, args.threads,
        f"{plain_wall:.2f}", f"{fedavg_wall:.2f}", f"{fedavg_wall / plain_wall:.3f}",
        f"{plain_cpu:.2f}", f"{fedavg_cpu:.2f}", f"{fedavg_cpu / plain_cpu:.3f}",
        f"{fedavg_acc:.4f}",
        "yes" if plain_acc == fedavg_acc and steps == fedavg_steps else "NO",
    )]
    print(format_table(("mode", "workers", "rounds", "sgd steps", "threads", "plain wall s",
                        "fedavg wall s", "wall ratio", "plain cpu s", "fedavg cpu s",
                        "cpu ratio", "accuracy", "same accuracy"), rows))


if __name__ == "__main__":
    main()
