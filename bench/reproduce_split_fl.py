"""MergeSFL and ParallelSFL against their split-FL baselines, on the same emulated budget.

Every method trains the same CNN on the same non-IID data (label-pattern, p = 0.8: class c puts
80% of its samples on worker c mod 20) over the same 20 emulated Jetsons of the ``jetson80``
preset (a stratified subset: TX2, NX and AGX Orin, with an A6000 server), from the same seed,
until the same emulated time budget is spent. The table gives, per method and ablation: the final
test accuracy (the last evaluation within the budget), the emulated time to reach the target
accuracy, the traffic (total, and features / gradients / models) within the budget, and the mean
waiting time per worker. Claims of the papers (80 Jetsons, CIFAR-10 and others) are printed above
the table for comparison; see docs/methods/mergesfl.md and parallelsfl.md for the discussion.

    python bench/reproduce_split_fl.py [--quick] [--budget SECONDS] [--only NAME ...]

``--quick``: sklearn digits instead of MNIST-5000, a shorter budget and no ablations (about a
minute on an idle 2-core machine).
"""
from __future__ import annotations

import argparse
import sys
import time
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
    reached = next((p.sim_time_s for p in accuracy if p.value >= target), None)

    def last(name: str) -> float:
        s = series(name)
        return s[-1].value if s else 0.0

    mb = lambda name: f"{last(name) / 1e6:.1f}"  # noqa: E731
    return [label, len(accuracy), f"{accuracy[-1].value:.4f}" if accuracy else "-",
            f"{max(p.value for p in accuracy):.4f}" if accuracy else "-",
            f"{reached:.1f}" if reached is not None else f">{budget_s:g}",
            mb("traffic_bytes"), mb("traffic_bytes/features"), mb("traffic_bytes/gradients"),
            mb("traffic_bytes/model"),
            f"{last('waiting_time_s'):.1f}" if series("waiting_time_s") else "-",
            f"{wall_s:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, short budget (~1 min)")
    parser.add_argument("--budget", type=float, help="emulated seconds per method")
    parser.add_argument("--target", type=float, help="target test accuracy")
    parser.add_argument("--only", nargs="*", help="run only these row labels")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = "digits" if args.quick else "mnist"
    budget = args.budget or (8.0 if args.quick else 120.0)
    target = args.target or (0.80 if args.quick else 0.90)
    rows = []
    for label, name, overrides in RUNS[:5] if args.quick else RUNS:
        if args.only and label not in args.only:
            continue
        method = registry.get(name)
        config = method.parse_config({**COMMON, "dataset": dataset, **overrides})
        reporter = BudgetReporter(budget)
        start = time.perf_counter()
        try:
            method.run(config, reporter)
        except Cancelled:
            pass
        wall = time.perf_counter() - start
        rows.append(summarise(label, reporter, budget, target, wall))
        print(f"{label}: done in {wall:.0f} s wall", file=sys.stderr, flush=True)

    print(CLAIMS)
    print(f"\n{dataset}, 20 workers of jetson80, label-pattern p=0.8, CNN, seed 0; emulated "
          f"budget {budget:g} s per method; target accuracy {target:g}; traffic in MB")
    print(format_table(
        ["method", "evals", "final acc", "best acc", "time to target (s)", "traffic",
         "features", "gradients", "model", "mean wait (s)", "wall (s)"], rows))


if __name__ == "__main__":
    main()
