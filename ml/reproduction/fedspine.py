"""The FedSpine reproduction (arXiv 2501.02438): federated LoRA fine-tuning with iterative
structured pruning and a bandit choosing each client's (pruning ratio, LoRA rank), against
FedLoRA, HetLoRA and prune-then-fine-tune at equal sparsity.

Declared here, before any evaluated run:

- **arms**: ``fedspine`` (S-UCB per client over ratio 0.02-0.3 and rank 2-16, prune-and-recover
  every 5 local iterations, reaching the target sparsity 0.5 by round 25 of 50 at the latest, so
  at least 25 rounds are left to recover); ``fedlora@S`` (rank 8) and ``hetlora@S`` (ranks 2-16
  from device capability, self-pruning) pruned once to 0.5 after 5 iterations of round 1 with
  the same LoRA-gradient importance; ``prune-then-finetune`` (magnitude pruning of the base to
  0.5 before round 1, rank 8). All end at sparsity 0.5 (equal sparsity).
- **task**: the frozen ``small`` byte-level decoder (2 blocks, d_model 64, pre-trained on pydoc,
  cached) with a new linear head classifies 64-byte windows by file kind (``source-kinds``,
  5 classes); 3 clients (Jetson TX2, NX and AGX Orin) with Dirichlet(0.5) shards, every client in
  every round (so each of FedSpine's bandits gets 50 pulls), 50 rounds of 10 local AdamW
  iterations (batch 16, lr 3e-3); accuracy is the mean over the clients' deployed (pruned)
  models on 150 held-out windows, evaluated every round.
- **regimes**: the links, which decide how much a LoRA rank costs in completion time (the
  emulated clock charges the clients' real FLOPs on their Jetson's rate and the adapters' bytes
  on their links, sent one client after another): every link at a tenth of the catalogue rate
  (TX2 2/4, NX 4/8, AGX Orin 10/20 Mbit/s up/down: a rank-16 upload takes the TX2 about 0.7 s
  against 0.2 s of local compute, so the rank changes completion time; headline) and the
  catalogue links (20/40, 40/80, 100/200 Mbit/s: the earlier bench's, where it barely does).
- **metrics**: ``time_to_target_s``, the emulated time at which the accuracy curve first
  reaches :data:`TARGET_ACCURACY` (interpolated between evaluations; a run that never does counts
  with its whole emulated time, censored); ``final_accuracy``, the mean of the last 5
  evaluations (rounds 46-50), at equal sparsity.
- **target** (fixed before any evaluated run): :data:`TARGET_ACCURACY`, from one pilot of the
  four arms on seed 100 (not an evaluated seed) in the headline regime: the lowest of the four
  arms' mean accuracy over their last 10 rounds, minus 2 points, rounded down to 0.01 (so every
  arm can reach it and it is on the plateau's shoulder, not at chance).
- **seeds**: 0-4, paired (the seed sets the partition, the batches, the adapters' start and the
  bandits' draws).
- **claims**: fine-tuning 1.4-6.9x faster (the bound: 1.4x, time to target, baseline / FedSpine)
  and +0.4 to +4.5 points at equal sparsity (the bound: 0.4 points of final accuracy), each
  against each baseline.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from ml import registry
from ml.reporting import MemoryReporter
from ml.reproduction.curves import first_crossing
from ml.reproduction.declaration import Arm, Claim, Comparison, Declaration, Regime

#: Accuracy every arm's time is measured to, by the pilot rule of the module docstring; never
#: changed after the evaluated runs. The seed-100 pilot (headline regime, the FULL settings),
#: mean accuracy over the last 10 rounds: hetlora@S 0.720 (the lowest), fedspine 0.751,
#: prune-then-finetune 0.826; fedlora@S's pilot record was lost to a crash of the pilot script
#: after its run, and its logged last-5 mean, 0.808, shows it was not the lowest. 0.720 - 0.02.
TARGET_ACCURACY = 0.70
SPARSITY = 0.5
PRUNE_EVERY = 5
BASELINES = ("fedlora@S", "hetlora@S", "prune-then-finetune")

ARMS = (
    Arm("fedspine", "fedspine", {"target_sparsity": SPARSITY, "prune_every": PRUNE_EVERY,
                                 "prune_rounds": 25}),
    Arm("fedlora@S", "fedlora", {"target_sparsity": SPARSITY, "prune_every": PRUNE_EVERY,
                                 "rank": 8}),
    Arm("hetlora@S", "hetlora", {"target_sparsity": SPARSITY, "prune_every": PRUNE_EVERY}),
    Arm("prune-then-finetune", "prune-then-finetune", {"target_sparsity": SPARSITY, "rank": 8}),
)

#: "1.4x-6.9x faster fine-tuning": the lower end as the bound.
SPEEDUP = 1.4
#: "+0.4 to +4.5 points at equal sparsity": the lower end as the bound.
POINTS = 0.4

CLAIMS = (
    Claim("fedspine-faster",
          "FedSpine fine-tunes 1.4-6.9x faster than each baseline (time to the target accuracy, "
          "at equal sparsity).",
          tuple(Comparison("fedspine", b, "time_to_target_s", "ratio", "lower", SPEEDUP)
                for b in BASELINES)),
    Claim("fedspine-accuracy",
          "FedSpine's final accuracy is 0.4-4.5 points above each baseline's at equal sparsity.",
          tuple(Comparison("fedspine", b, "final_accuracy", "difference", "higher", POINTS,
                           scale=100.0) for b in BASELINES)),
)

#: Jetson types of the three clients, with their catalogue links (up, down Mbit/s).
DEVICES = (("jetson-tx2", 20.0, 40.0), ("jetson-nx", 40.0, 80.0),
           ("jetson-agx-orin", 100.0, 200.0))


def testbed(link_scale: float) -> list[dict[str, Any]]:
    """The three Jetsons with every link at ``link_scale`` times its catalogue rate, then the
    A6000 server (a config ``testbed``)."""
    items: list[dict[str, Any]] = [
        {"profile": p, "name": f"{p}-01", "uplink_mbps": up * link_scale,
         "downlink_mbps": down * link_scale} for p, up, down in DEVICES]
    return items + [{"profile": "a6000-server", "name": "a6000-server"}]


REGIMES = (
    Regime("links-0.1", "links / 10 (2-10 Mbit/s up)", {"link_scale": 0.1}),
    Regime("links-1", "catalogue links (20-100 Mbit/s up)", {"link_scale": 1.0}),
)

COMMON = {"dataset": "source-kinds", "base": "small", "workers": len(DEVICES),
          "batch_size": 16, "lr": 3e-3, "partition": "dirichlet", "partition_alpha": 0.5,
          "eval_every": 1}
FULL = {**COMMON, "rounds": 50, "local_steps": 10, "test_samples": 150}
#: ``--quick``: 5 rounds of 6 iterations (FedSpine sparse by round 2), 60 test windows.
QUICK = {**COMMON, "rounds": 5, "local_steps": 6, "test_samples": 60}
QUICK_OVERRIDES = {"prune_every": 3, "prune_rounds": 2}
#: Smoke-check target of ``--quick`` (its runs pass 0.4 within a few rounds); no verdict of the
#: docs rests on it.
QUICK_TARGET = 0.4
FINAL_WINDOW = 5  # final accuracy: the mean of the last this many evaluations

REPORT_METRICS = ["time_to_target_s", "rounds_to_target", "final_accuracy", "final_sparsity",
                  "round_time_s", "sim_time_s", "traffic_mb", "mean_rank", "sparse_at_round"]

TARGET = {"accuracy": TARGET_ACCURACY, "sparsity": SPARSITY, "rounds": FULL["rounds"],
          "final_accuracy_window": FINAL_WINDOW, "report_metrics": REPORT_METRICS}

HEADLINE = "links-0.1"
QUICK_REGIME = HEADLINE
QUICK_SEEDS = (0, 1)


def run_config(regime: Regime, arm: Arm, settings: dict, seed: int,
               extra: dict | None = None) -> dict[str, Any]:
    """The config ``arm`` runs in ``regime`` with ``seed`` (before restricting to the keys its
    method knows)."""
    overrides = {**arm.overrides}
    for key, value in (extra or {}).items():
        if key in overrides or key == "prune_rounds":
            overrides[key] = value
    if arm.method != "fedspine":
        overrides.pop("prune_rounds", None)
    return {**settings, **overrides, "testbed": testbed(regime.settings["link_scale"]),
            "seed": seed}


DECLARATION = Declaration(
    key="fedspine",
    paper="FedSpine (federated LoRA fine-tuning with iterative structured pruning and a "
          "bandit)",
    arxiv="2501.02438",
    setting="Three clients (Jetson TX2, NX, AGX Orin; Dirichlet(0.5) shards) fine-tune LoRA "
            "adapters and a linear head on a frozen 2-block byte-level decoder (d_model 64, "
            "0.12 M parameters, pre-trained on pydoc) to classify 64-byte windows by file kind "
            "(5 classes); 50 rounds of 10 local AdamW iterations (batch 16, lr 3e-3), every "
            "client every round; all four methods end at 50% structured sparsity (whole heads "
            "and FFN channels). FedSpine's S-UCB picks each client's pruning ratio (0.02-0.3) "
            "and rank (2-16) every round and must reach 50% by round 25; FedLoRA (rank 8) and "
            "HetLoRA (ranks 2-16 by device) prune once in round 1; prune-then-fine-tune prunes "
            "the base by magnitude before round 1. The emulated clock charges each client's "
            "real FLOPs at its Jetson's rate and the adapters' bytes on its links, one client "
            "after another; accuracy is the mean over the clients' deployed models on 150 "
            "held-out windows after every round.",
    claims=CLAIMS,
    arms=ARMS,
    regimes=REGIMES,
    headline=HEADLINE,
    seeds=tuple(range(5)),
    target=TARGET,
    differences=(
        "Model and task: a 0.12 M-parameter byte-level decoder and a 5-class file-kind task, "
        "not LLaMA-class models on GLUE-style tasks; the compute it charges is its own, so "
        "pruning saves little time and the adapters' bytes (the rank) decide much of a round.",
        "Three clients, every one in every round, 50 rounds (the paper: 80 Jetsons, a share "
        "of them per round, more rounds); each bandit gets 50 pulls.",
        "S-UCB is HOO on (ratio, rank) with our reward (loss gain, pruning progress, update "
        "norm, completion time relative to the others): the paper names the terms, not the "
        "form.",
        "The baselines' details are ours: FedLoRA and HetLoRA prune once in round 1 with the "
        "same importance; prune-then-fine-tune prunes by weight magnitude, data-free.",
        "The target accuracy and final-accuracy window are fixed from a pilot on seed 100 "
        "(not evaluated); the paper reads time to a target accuracy off its curves.",
        "Links are the catalogue's Wi-Fi rates and a tenth of them; the clients are served one "
        "after another, so a round's time is the sum of theirs.",
    ),
    launch={"algorithm": "fedspine", "baselines": ["fedlora", "hetlora", "prune-then-finetune"],
            "config": {k: v for k, v in run_config(REGIMES[0], ARMS[0], FULL, 0).items()
                       if k != "seed"}},
)


def run_arm(regime: Regime, arm: Arm, seed: int, context: dict) -> dict:
    """Fine-tune with ``arm`` in ``regime`` and ``seed``; its record with time to the target.

    ``context``: ``settings`` (FULL or QUICK), ``accuracy`` (the target), optional
    ``overrides`` (QUICK_OVERRIDES) and ``threads`` (torch threads, default 1).
    """
    torch.set_num_threads(context.get("threads", 1))
    method = registry.get(arm.method)
    config = run_config(regime, arm, context["settings"], seed, context.get("overrides"))
    known = method.config.model_fields
    parsed = method.parse_config({k: v for k, v in config.items() if k in known})
    reporter = MemoryReporter()
    start, cpu = time.perf_counter(), time.process_time()
    result = method.run(parsed, reporter)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    points = reporter.series("accuracy")
    sim = [p.sim_time_s for p in points]
    accuracy = [p.value for p in points]
    rounds = [float(p.step) for p in points]
    traffic_by_step = {p.step: p.value for p in reporter.series("traffic_bytes")}
    traffic = [traffic_by_step.get(p.step, 0.0) / 1e6 for p in points]
    total_s = float(result["sim_time_s"])
    target = context["accuracy"]
    hit = first_crossing(sim, accuracy, traffic, target, total_s)
    by_round = first_crossing(rounds, accuracy, traffic, target, float(parsed.rounds))
    final = result["final"]
    sparsity = [p.value for p in reporter.series("sparsity")]
    sparse_at = next((i + 1 for i, s in enumerate(sparsity) if s >= SPARSITY - 0.01), None)
    ranks = _client_series(reporter, "rank", parsed.workers)
    times = _client_series(reporter, "completion_time_s", parsed.workers)
    round_times = [p.value for p in reporter.series("round_time_s")]
    censored = ["time_to_target_s", "rounds_to_target"] if hit.censored else []
    return {"regime": regime.key, "arm": arm.label, "seed": seed,
            "metrics": {"time_to_target_s": hit.time_s,
                        "rounds_to_target": by_round.time_s,
                        "final_accuracy": statistics.fmean(accuracy[-FINAL_WINDOW:]),
                        "last_accuracy": accuracy[-1],
                        "final_sparsity": float(final["sparsity"]),
                        "round_time_s": statistics.fmean(round_times),
                        "sim_time_s": total_s,
                        "traffic_mb": float(final["traffic_bytes"]) / 1e6,
                        "traffic_to_target_mb": hit.traffic,
                        "mean_rank": statistics.fmean(v for r in ranks.values() for v in r),
                        "sparse_at_round": float(sparse_at) if sparse_at else None},
            "censored": censored,
            "curve": {"time_s": sim, "accuracy": accuracy},
            "clients": {name: {"device": d, "ranks": ranks[name], "completion_s": times[name]}
                        for name, d in zip(ranks, [c["device"] for c in result["clients"]])},
            "wall_s": wall, "cpu_s": cpu}


def _client_series(reporter: MemoryReporter, metric: str, workers: int) -> dict[str, list]:
    return {f"client-{i:02d}": [p.value for p in reporter.series(f"{metric}/client-{i:02d}")]
            for i in range(workers)}


def describe(runs: list[dict]) -> list[str]:
    """Per regime: FedSpine's ranks per device in the second half, and what a rank costs there
    (completion time per device and arm)."""
    lines = []
    for regime in REGIMES:
        rows = [r for r in runs if r["regime"] == regime.key and r.get("clients")]
        if not rows:
            continue
        parts = []
        for arm in [a.label for a in ARMS]:
            mine = [r for r in rows if r["arm"] == arm]
            if not mine:
                continue
            per_device = []
            for name in sorted(mine[0]["clients"]):
                device = mine[0]["clients"][name]["device"]
                half = [r["clients"][name] for r in mine]
                rank = statistics.fmean(v for c in half for v in c["ranks"][len(c["ranks"]) // 2:])
                t = statistics.fmean(v for c in half
                                     for v in c["completion_s"][len(c["completion_s"]) // 2:])
                per_device.append(f"{device.split('-0')[0]} rank {rank:.1f}, {t:.2f} s")
            parts.append(f"{arm}: " + "; ".join(per_device))
        lines.append(f"{regime.label}, rounds 26-50, mean rank and cumulative completion time "
                     f"per client (clients served in turn) -- " + " | ".join(parts) + ".")
    return lines


def pilot_target(curves: dict[str, list[float]], last: int = 10) -> float:
    """The declared rule for the target: the lowest arm's mean accuracy over its last ``last``
    evaluations, minus 2 points, rounded down to 0.01."""
    low = min(statistics.fmean(acc[-last:]) for acc in curves.values())
    return math.floor((low - 0.02) * 100 + 1e-9) / 100
