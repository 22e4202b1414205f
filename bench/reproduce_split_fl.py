"""MergeSFL and ParallelSFL against their split-FL baselines, on the same emulated budget.

Every method trains the same CNN on the same non-IID data (label-pattern, p = 0.8: class c puts
80% of its samples on worker c mod 20) over the same 20 emulated Jetsons of the ``jetson80``
preset (a stratified subset: TX2, NX and AGX Orin, with an A6000 server), from the same seeds,
until the same emulated time budget is spent. The server's access link (``--server-mbps``) is
shared by all workers (the emulator queues what exceeds it): full mode prints one table for a
10 GbE server, which never limits 20 Jetsons, and one for a 100 Mbit/s link, which does (an
access point or campus uplink shared by the workers).

Each table gives, per method and ablation: the final test accuracy (the last evaluation within
the budget), the best one, the emulated time to reach the target accuracy and the traffic spent
until then, the traffic (total, and features / gradients / models) within the budget, and the
mean waiting time per worker; mean ± standard deviation over seeds, the time to target averaged
over the seeds that reach it (with their count). The papers' claims (80 Jetsons, CIFAR-10 and
others) are printed above the tables; docs/methods/mergesfl.md and parallelsfl.md discuss them.

    python bench/reproduce_split_fl.py [--quick] [--dataset digits|mnist] [--budget SECONDS]
                                       [--target ACC] [--only LABEL ...] [--jobs N]
                                       [--seeds N ...] [--server-mbps MBPS ...]

Full mode: sklearn digits, 20 s of emulated time, every method and ablation, seeds 0, 1 and 2,
both links (78 runs). ``--dataset mnist`` is the heavier MNIST-5000 variant (28x28 inputs: a few
CPU-minutes per emulated 10 s and method). ``--quick``: digits, an 8 s budget, the five main
methods, seed 0, the 100 Mbit/s link. ``--jobs N`` runs N at once in separate processes (one
torch thread each).
"""
from __future__ import annotations

import argparse
import statistics
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

COMMON = {"workers": 20, "partition": "label-pattern", "partition_p": 0.8,
          "batch_size": 32, "lr": 0.05, "momentum": 0.0, "rounds": 100_000}
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
    ("parallelsfl top-lr none", "parallelsfl", {**SPLIT, "clusters": 4,
                                                "top_lr_scaling": "none"}),
    ("parallelsfl fednova-aggregation", "parallelsfl", {**SPLIT, "clusters": 4,
                                                        "aggregation": "normalized"}),
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


def summarise(reporter: BudgetReporter, budget_s: float, target: float) -> dict:
    """One run's figures within the budget (traffic in MB, times in emulated seconds)."""
    series = lambda name: within(reporter.series(name), budget_s)  # noqa: E731
    accuracy = series("accuracy")
    reached = next((p for p in accuracy if p.value >= target), None)
    traffic = {p.step: p.value for p in series("traffic_bytes")}

    def last(name: str) -> float:
        s = series(name)
        return s[-1].value if s else 0.0

    return {
        "evals": len(accuracy),
        "final": accuracy[-1].value if accuracy else None,
        "best": max(p.value for p in accuracy) if accuracy else None,
        "to_target_s": reached.sim_time_s if reached is not None else None,
        "traffic_to_target": traffic[reached.step] / 1e6 if reached is not None else None,
        **{key: last(name) / 1e6 for key, name in (
            ("traffic", "traffic_bytes"), ("features", "traffic_bytes/features"),
            ("gradients", "traffic_bytes/gradients"), ("model", "traffic_bytes/model"))},
        "wait": last("waiting_time_s") if series("waiting_time_s") else None,
    }


def run_one(label: str, name: str, overrides: dict, dataset: str, budget: float,
            target: float, threads: int, seed: int, testbed: str) -> tuple[str, dict]:
    """Train one row's method with one seed until the emulated budget is spent."""
    torch.set_num_threads(threads)
    method = registry.get(name)
    config = method.parse_config({**COMMON, "dataset": dataset, "seed": seed,
                                  "testbed": testbed, **overrides})
    reporter = BudgetReporter(budget)
    start = time.perf_counter()
    try:
        method.run(config, reporter)
    except Cancelled:
        pass
    figures = {**summarise(reporter, budget, target), "wall": time.perf_counter() - start}
    print(f"{label} seed {seed}: {figures}", file=sys.stderr, flush=True)
    return label, figures


def mean_sd(values: list[float], fmt: str) -> str:
    """``mean ± sd`` of the values (just the value for one), ``-`` for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def table_row(label: str, runs: list[dict], budget_s: float) -> list:
    """The table row of one label, aggregated over its seeds."""
    pick = lambda key: [r[key] for r in runs if r[key] is not None]  # noqa: E731
    reached = pick("to_target_s")
    if reached:
        to_target = mean_sd(reached, ".1f")
        if len(reached) < len(runs):
            to_target += f" ({len(reached)}/{len(runs)})"
    else:
        to_target = f">{budget_s:g}"
    return [label, len(runs), mean_sd(pick("final"), ".3f"), mean_sd(pick("best"), ".3f"),
            to_target, mean_sd(pick("traffic_to_target"), ".0f"), mean_sd(pick("traffic"), ".0f"),
            mean_sd(pick("features"), ".0f"), mean_sd(pick("gradients"), ".0f"),
            mean_sd(pick("model"), ".0f"), mean_sd(pick("wait"), ".1f"),
            f"{sum(r['wall'] for r in runs):.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short budget, main methods only")
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--budget", type=float, help="emulated seconds per method")
    parser.add_argument("--target", type=float, help="target test accuracy")
    parser.add_argument("--only", nargs="*", help="run only these row labels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (processes)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2; quick: 0)")
    parser.add_argument("--server-mbps", type=float, nargs="+",
                        help="the server's access link, shared by all workers, in Mbit/s; one "
                             "table per value (default 10000 100; quick: 100)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    budget = args.budget or (8.0 if args.quick else 20.0)
    target = args.target or (0.80 if args.quick else 0.90)
    runs = [r for r in (RUNS[:5] if args.quick else RUNS) if not args.only or r[0] in args.only]
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    links = args.server_mbps or ([100.0] if args.quick else [10_000.0, 100.0])
    jobs = [(label, name, overrides, args.dataset, budget, target, args.threads, seed,
             f"jetson80:server_mbps={mbps:g}")
            for mbps in links for label, name, overrides in runs for seed in seeds]
    wall_start = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run_one, *zip(*jobs)))
    else:
        results = [run_one(*job) for job in jobs]
    tables: dict[str, dict[str, list[dict]]] = {}
    for job, (label, figures) in zip(jobs, results):
        tables.setdefault(job[-1], {}).setdefault(label, []).append(figures)

    print(CLAIMS)
    for testbed, by_label in tables.items():
        print(f"\n{args.dataset}, 20 workers of {testbed} (the server's link shared by all), "
              f"label-pattern p=0.8, CNN, seeds {' '.join(map(str, seeds))} (mean ± sd); "
              f"emulated budget {budget:g} s per method; target accuracy {target:g}; traffic in "
              f"MB; total wall {time.perf_counter() - wall_start:.0f} s")
        print(format_table(
            ["method", "seeds", "final acc", "best acc", "time to target (s)",
             "traffic to target", "traffic", "features", "gradients", "model", "mean wait (s)",
             "wall (s)"],
            [table_row(label, figures, budget) for label, figures in by_label.items()]))

if __name__ == "__main__":
    main()
