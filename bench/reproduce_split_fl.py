"""MergeSFL and ParallelSFL against their split-FL baselines, on the same emulated budget.

Every method trains the same CNN on the same non-IID data (label-pattern, p = 0.8: class c puts
80% of its samples on worker c mod 20) over the same 20 emulated Jetsons of the ``jetson80``
preset (a stratified subset: TX2, NX and AGX Orin, with an A6000 server), from the same seed,
until the same emulated time budget is spent. The table gives, per method and ablation: the final
test accuracy (the last evaluation within the budget), the best one, the emulated time to reach
the target accuracy and the traffic spent until then, the traffic (total, and features /
gradients / models) within the budget, and the mean waiting time per worker. Claims of the papers
(80 Jetsons, CIFAR-10 and others) are printed above the table for comparison; see
docs/methods/mergesfl.md and parallelsfl.md for the discussion.

    python bench/reproduce_split_fl.py [--quick] [--dataset digits|mnist] [--budget SECONDS]
                                       [--target ACC] [--only LABEL ...] [--jobs N]

Full mode: sklearn digits, 20 s of emulated time, every method and ablation (eleven runs; about
13 CPU-minutes). ``--dataset mnist`` is the heavier MNIST-5000 variant (28x28 inputs: a few
CPU-minutes per emulated 10 s and method). ``--quick``: digits, a shorter budget, the five main
methods only. ``--jobs N`` runs N methods at once in separate processes (one torch thread each).
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ml import registry  # noqa: E402
from ml.cli import format_table  # noqa: E402
from ml.reporting import Cancelled, MemoryReporter, MetricPoint  # noqa: E402

COMMON = {"workers": 20, "partition": "label-pattern", "partition_p": 0.8, "testbed": "jetson80",
          "seed": 0, "batch_size": 32, "lr": 0.05, "momentum": 0.0, "rounds": 100_000}
SPLIT = {"local_iterations": 10}

#: (row label, method, config overrides); --quick runs the first five.
RUNS: list[tuple[str, str, dict]] = [
    ("fedavg", "fedavg", {"local_epochs": 1}),
    ("splitfed", "splitfed", SPLIT),
    ("adasfl = mergesfl -merging", "adasfl", SPLIT),
    ("mergesfl", "mergesfl", SPLIT),
    ("parallelsfl", "parallelsfl", {**SPLIT, "clusters": 4}),
    ("mergesfl -regulation", "mergesfl", {**SPLIT, "batch_regulation": False}),
    ("mergesfl GA 50%", "mergesfl", {**SPLIT, "clients_per_round": 0.5}),
    ("parallelsfl random-clusters", "parallelsfl", {**SPLIT, "clusters": 4,
                                                    "clustering": "random"}),
    ("parallelsfl fixed-frequency", "parallelsfl", {**SPLIT, "clusters": 4,
                                                    "adaptive_frequency": False}),
    ("mergesfl top-lr sqrt", "mergesfl", {**SPLIT, "top_lr_scaling": "sqrt"}),
    ("mergesfl top-lr none", "mergesfl", {**SPLIT, "top_lr_scaling": "none"}),
]

CLAIMS = """Papers' claims (80 Jetsons; HAR, Speech, CIFAR-10, IMAGE-100):
  MergeSFL    vs SFL baselines: accuracy +5.82% to +26.22%, speedup 1.39x to 4.14x
  ParallelSFL vs baselines:     traffic -21% or more, speedup 1.36x or more, accuracy +5% or more"""


class BudgetReporter(MemoryReporter):
    """Keeps every point and asks the method to stop once the emulated budget is spent."""

    def __init__(self, budget_s: float):
        super().__init__()
        self.budget_s = budget_s

    def should_stop(self) -> bool:
        return bool(self.points) and self.points[-1].sim_time_s >= self.budget_s


def within(points: list[MetricPoint], budget_s: float) -> list[MetricPoint]:
    return [p for p in points if p.sim_time_s <= budget_s]


def summarise(label: str, reporter: BudgetReporter, budget_s: float, target: float,
              wall_s: float) -> list:
    series = lambda name: within(reporter.series(name), budget_s)  # noqa: E731
    accuracy = series("accuracy")
    reached = next((p for p in accuracy if p.value >= target), None)
    traffic = {p.step: p.value for p in series("traffic_bytes")}

    def last(name: str) -> float:
        s = series(name)
        return s[-1].value if s else 0.0

    mb = lambda name: f"{last(name) / 1e6:.1f}"  # noqa: E731
    return [label, len(accuracy), f"{accuracy[-1].value:.4f}" if accuracy else "-",
            f"{max(p.value for p in accuracy):.4f}" if accuracy else "-",
            f"{reached.sim_time_s:.1f}" if reached is not None else f">{budget_s:g}",
            f"{traffic[reached.step] / 1e6:.1f}" if reached is not None else "-",
            mb("traffic_bytes"), mb("traffic_bytes/features"), mb("traffic_bytes/gradients"),
            mb("traffic_bytes/model"),
            f"{last('waiting_time_s'):.1f}" if series("waiting_time_s") else "-",
            f"{wall_s:.0f}"]


def run_one(label: str, name: str, overrides: dict, dataset: str, budget: float,
            target: float, threads: int) -> list:
    """Train one row's method until the emulated budget is spent; return its table row."""
    torch.set_num_threads(threads)
    method = registry.get(name)
    config = method.parse_config({**COMMON, "dataset": dataset, **overrides})
    reporter = BudgetReporter(budget)
    start = time.perf_counter()
    try:
        method.run(config, reporter)
    except Cancelled:
        pass
    wall = time.perf_counter() - start
    row = summarise(label, reporter, budget, target, wall)
    print(f"{label}: done in {wall:.0f} s wall: {row}", file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short budget, main methods only")
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--budget", type=float, help="emulated seconds per method")
    parser.add_argument("--target", type=float, help="target test accuracy")
    parser.add_argument("--only", nargs="*", help="run only these row labels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (processes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    budget = args.budget or (8.0 if args.quick else 20.0)
    target = args.target or (0.80 if args.quick else 0.90)
    runs = [r for r in (RUNS[:5] if args.quick else RUNS) if not args.only or r[0] in args.only]
    jobs = [(label, name, overrides, args.dataset, budget, target, args.threads)
            for label, name, overrides in runs]
    wall_start = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(run_one, *zip(*jobs)))
    else:
        rows = [run_one(*job) for job in jobs]

    print(CLAIMS)
    print(f"\n{args.dataset}, 20 workers of jetson80, label-pattern p=0.8, CNN, seed 0; emulated "
          f"budget {budget:g} s per method; target accuracy {target:g}; traffic in MB; total "
          f"wall {time.perf_counter() - wall_start:.0f} s")
    print(format_table(
        ["method", "evals", "final acc", "best acc", "time to target (s)",
         "traffic to target", "traffic", "features", "gradients", "model", "mean wait (s)",
         "wall (s)"], rows))


if __name__ == "__main__":
    main()
