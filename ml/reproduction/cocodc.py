"""The CoCoDC reproduction (arXiv 2504.17672): steps to a perplexity target against Streaming
DiLoCo (arXiv 2501.18512), trained from scratch across four emulated regions.

Declared here, before any run:

- **arms**: Streaming DiLoCo (P = 4 strided fragments, α = 0.5, outer lr 0.4: the CoCoDC
  authors' settings); CoCoDC with N = P sends per H steps (``cocodc-N=P``: the same fragments
  sent as often as Streaming DiLoCo sends them: equal traffic, up to which fragments go, as
  ours differ in size (the embedding and head are larger than a block); the primary
  comparison) and
  CoCoDC with N from the link (``cocodc``: N = ⌊H / τ_max⌋, the paper's Adaptive Transmission,
  which sends more bytes than Streaming DiLoCo where the link is fast and fewer where it is
  slow; the secondary comparison). λ₀ = 1 as in the paper.
- **model and data**: an 8-block decoder (d_model 32, 2 heads, SwiGLU MLP of width 96,
  rotary positions; ~0.17 M parameters) trained from scratch on the offline ``cpython`` corpus
  with a 1,024-token BPE trained on its training documents (every tenth document held out);
  each region trains on its own contiguous quarter of the training tokens.
- **schedule**: H = 16 inner steps, 30 outer rounds (every fragment is synchronised 30 times by
  Streaming DiLoCo), 480 inner steps in all; held-out perplexity every 4 steps on 80 fixed
  windows of region 0's replica (the authors evaluate rank 0), and the step at which a run first
  reaches a target interpolated between evaluations (in log perplexity).
- **targets** (fixed before any evaluated run): perplexity :data:`TARGET_PPL` ("comparable
  perplexity", the claim's target) and :data:`MID_TARGET_PPL` (reported beside it). They are
  what one pilot run of Streaming DiLoCo on seed 100 (not an evaluated seed) in the headline
  regime reached at 75% and 33% of its 480 steps, rounded up. A run that never reaches a target
  counts with the 480-step budget (censored, a lower bound).
- **regimes**: the WAN, which sets τ (steps a fragment's reduce overlaps training) and the
  free N: 10 Gbit/s at 100 ms RTT (headline), 1 Gbit/s at 100 ms (the ``cross-region-4``
  preset), 10 Gbit/s at 200 ms and at 10 ms. The emulated clock charges a Llama-150M on
  8 × 1024 tokens per step (0.295 s on an H100), so τ = 2, 5-10, 3 and 1 steps against
  Streaming DiLoCo's send stride of H/P = 4 (free N = 8, 1, 5 and 16). The sweep runs in this
  order, so a stopped run keeps the most telling regimes.
- **seeds**: 0-4, paired (the seed sets the initialisation and every region's batches).

The claim says "up to 21% fewer steps": its bound here is that figure, a 1/(1 - 0.21) = 1.27x
ratio of Streaming DiLoCo's steps to CoCoDC's.
"""
from __future__ import annotations

import math
import time

import torch

from ml import registry
from ml.reporting import MemoryReporter
from ml.reproduction.curves import first_crossing
from ml.reproduction.declaration import Arm, Claim, Comparison, Declaration, Regime

#: "up to 21% fewer steps": Streaming DiLoCo's steps over CoCoDC's at least 1 / (1 - 0.21).
STEP_RATIO = 1 / (1 - 0.21)

#: The claim's target and a mid-run one (held-out perplexity), from the seed-100 pilot (see the
#: module docstring); never changed after the evaluated runs.
TARGET_PPL = 79.0  # the pilot: 78.83 at step 360 of 480
MID_TARGET_PPL = 141.0  # the pilot: 140.76 at step 160

STREAMING = {"outer_lr": 0.4, "fragments": 4, "alpha": 0.5}
ARMS = (
    Arm("streaming-diloco", "streaming-diloco", STREAMING),
    Arm("cocodc-N=P", "cocodc", {**STREAMING, "dc_lambda": 1.0, "transmissions_per_round": 4}),
    Arm("cocodc", "cocodc", {**STREAMING, "dc_lambda": 1.0}),
)

CLAIM_TEXT = ("CoCoDC needs up to 21% fewer steps than Streaming DiLoCo to reach the same "
              "perplexity")
CLAIMS = (
    Claim("cocodc-equal-traffic",
          CLAIM_TEXT + "; here with N = P sends per H, as many fragment sends as Streaming "
                       "DiLoCo (equal traffic; primary comparison).",
          (Comparison("cocodc-N=P", "streaming-diloco", "steps_to_target", "ratio", "lower",
                      STEP_RATIO),)),
    Claim("cocodc-free-N",
          CLAIM_TEXT + "; here with N from the link (Adaptive Transmission as in the paper, "
                       "whose bytes differ from Streaming DiLoCo's; secondary comparison).",
          (Comparison("cocodc", "streaming-diloco", "steps_to_target", "ratio", "lower",
                      STEP_RATIO),)),
)

REGIMES = (
    Regime("wan-10g-100ms", "10 Gbit/s, 100 ms (tau 2)",
           {"wan_bandwidth_mbps": 10_000.0, "wan_rtt_ms": 100.0}),
    Regime("wan-1g-100ms", "1 Gbit/s, 100 ms (tau 5-10)",
           {"wan_bandwidth_mbps": 1_000.0, "wan_rtt_ms": 100.0}),
    Regime("wan-10g-200ms", "10 Gbit/s, 200 ms (tau 3)",
           {"wan_bandwidth_mbps": 10_000.0, "wan_rtt_ms": 200.0}),
    Regime("wan-10g-10ms", "10 Gbit/s, 10 ms (tau 1)",
           {"wan_bandwidth_mbps": 10_000.0, "wan_rtt_ms": 10.0}),
)

#: Model, data, optimisers, WAN stand-in and evaluation of every arm and regime.
COMMON = {"dataset": "cpython", "tokenizer": "bpe", "vocab_size": 1024, "d_model": 32,
          "layers": 8, "heads": 2, "batch_size": 8, "seq_len": 64, "workers": 4,
          "testbed": "cross-region-4", "inner_lr": 3e-3, "weight_decay": 0.1,
          "emulated_params": 150_000_000, "emulated_tokens_per_step": 8 * 1024,
          "eval_every": 4, "eval_windows": 80}
FULL = {**COMMON, "inner_steps": 16, "rounds": 30, "warmup_steps": 24}
#: ``--quick``: 5 rounds (80 steps) and its own smoke-check targets (declared here, too).
QUICK = {**COMMON, "inner_steps": 16, "rounds": 5, "warmup_steps": 8}
#: Smoke-check values for the 80-step ``--quick`` run (a 100-step pilot on seed 100 passed 650
#: and 450 at steps ~16 and ~33); no verdict of the docs rests on them.
QUICK_TARGETS = {"perplexity": 450.0, "mid_perplexity": 650.0,
                 "budget_steps": QUICK["inner_steps"] * QUICK["rounds"]}

REPORT_METRICS = ["steps_to_target", "steps_to_mid", "final_perplexity", "time_to_target_s",
                  "traffic_gb", "traffic_to_target_gb", "blocked_s", "sends", "send_period", "tau_max"]

TARGET = {"perplexity": TARGET_PPL, "mid_perplexity": MID_TARGET_PPL,
          "budget_steps": FULL["inner_steps"] * FULL["rounds"],
          "time_axis": "inner steps", "value_axis": "held-out perplexity",
          "value_scale": "log", "lower_is_better": True, "report_metrics": REPORT_METRICS}

DECLARATION = Declaration(
    key="cocodc",
    paper="CoCoDC (delay-compensated overlapping of cross-region LLM training)",
    arxiv="2504.17672",
    setting="Four regions (the cross-region-4 preset's H100s; the WAN per regime) each train a "
            "replica of an 8-block decoder (d_model 32, 2 heads, ~0.17 M parameters, 1,024-"
            "token BPE) from scratch on their own quarter of the offline cpython corpus (~3.4 M "
            "training tokens; every tenth file held out), 8 sequences of 64 tokens per step, "
            "AdamW 3e-3 with 24 warm-up steps and cosine decay, H = 16, 30 outer rounds (480 "
            "steps), P = 4 strided fragments, outer Nesterov lr 0.4; Streaming DiLoCo merges "
            "with alpha 0.5, CoCoDC compensates with lambda 1. Held-out perplexity every 4 "
            "steps on 80 windows; steps to target interpolated between evaluations. The "
            "emulated clock and bytes stand for Llama-150M on 8 x 1024 tokens per step.",
    claims=CLAIMS,
    arms=ARMS,
    regimes=REGIMES,
    headline="wan-10g-100ms",
    seeds=tuple(range(5)),
    target=TARGET,
    differences=(
        "Model and data: a 0.17 M-parameter 8-block decoder on ~3.4 M BPE tokens of Python "
        "sources, not Llama-150M on C4; 480 inner steps (~1 M tokens per region), not tens of "
        "thousands.",
        "H = 16 and 30 outer rounds (the paper: H = 100 and about 440 rounds); tau is 1-10 "
        "steps against a send stride of H/P = 4, where the paper has tau = 5 against 25.",
        "The WAN is emulated (ring all-reduce on the preset's links, the clock charging "
        "Llama-150M's compute and bytes); tau and N follow from it, N = floor(H / tau_max) "
        "for the free-N arm (the paper sets N = 8).",
        "Targets are two fixed perplexities from a pilot of Streaming DiLoCo on a seed outside "
        "the evaluated ones; the paper compares steps to a 'comparable perplexity' on its "
        "curves.",
        "Fragments differ in size (the 1,024 x 32 embedding and head are each 2.4 blocks), so "
        "at N = P CoCoDC makes as many sends as Streaming DiLoCo but its bytes depend on which "
        "fragments Adaptive Transmission picks (the table reports both); the paper's fragments "
        "are equal.",
        "DiLoCo (blocking) is not an arm: the claim is against Streaming DiLoCo only.",
    ),
    launch={"algorithm": "cocodc", "baselines": ["streaming-diloco"],
            "config": {**FULL,
                       **ARMS[1].overrides, "wan_bandwidth_mbps": 10_000.0,
                       "wan_rtt_ms": 100.0}},
)

QUICK_REGIME = "wan-10g-100ms"
QUICK_SEEDS = (0, 1)


def run_arm(regime: Regime, arm: Arm, seed: int, context: dict) -> dict:
    """Train ``arm`` in ``regime`` with ``seed``; return its record with steps to each target.

    ``context``: ``settings`` (FULL or QUICK), ``targets`` (``perplexity``,
    ``mid_perplexity``) and ``threads`` (torch threads, default 1).
    """
    torch.set_num_threads(context.get("threads", 1))
    method = registry.get(arm.method)
    known = method.config.model_fields
    values = {k: v for k, v in {**context["settings"], **regime.settings, **arm.overrides,
                                "seed": seed}.items() if k in known}
    config = method.parse_config(values)
    reporter = MemoryReporter()
    start = time.perf_counter()
    result = method.run(config, reporter)
    wall = time.perf_counter() - start
    points = reporter.series("perplexity")
    steps = [float(p.step) for p in points]
    ppl = [p.value for p in points]
    sim = [p.sim_time_s for p in points]
    traffic = [p.value for p in reporter.series("traffic_bytes")]
    budget = float(config.rounds * config.inner_steps)
    targets = context["targets"]
    late = steps_to(steps, ppl, sim, traffic, targets["perplexity"], budget)
    mid = steps_to(steps, ppl, sim, traffic, targets["mid_perplexity"], budget)
    final = result["final"]
    taus = [f["overlap_steps"] for f in result["fragments"]]
    censored = [name for name, crossing in (("steps_to_target", late), ("steps_to_mid", mid))
                if crossing["censored"]]
    if late["censored"]:
        censored += ["time_to_target_s", "traffic_to_target_gb"]
    return {"regime": regime.key, "arm": arm.label, "seed": seed,
            "metrics": {"steps_to_target": late["steps"], "steps_to_mid": mid["steps"],
                        "final_perplexity": final["perplexity"],
                        "time_to_target_s": late["time_s"],
                        "traffic_gb": final["traffic_bytes"] / 1e9,
                        "traffic_to_target_gb": late["traffic"] / 1e9,
                        "blocked_s": final["waiting_time_s"],
                        "send_period": float(result["send_period"]
                                             or config.inner_steps // config.fragments),
                        "tau_max": float(max(taus)),
                        "sends": float(sum(f["sends"] for f in result["fragments"]))},
            "censored": censored,
            "curve": {"time_s": steps, "accuracy": ppl},
            "taus": taus, "wall_s": wall}


def steps_to(steps: list[float], perplexity: list[float], sim_s: list[float],
             traffic: list[float], target: float, budget: float) -> dict:
    """Steps (and emulated seconds and bytes then) at which ``perplexity`` first reaches
    ``target``, interpolated linearly in log perplexity between evaluations; the budget and
    ``censored`` if it never does."""
    # first_crossing looks for a rising curve: negative log perplexity rises as it falls
    score = [-math.log(p) for p in perplexity]
    crossing = first_crossing(steps, score, traffic, -math.log(target), budget)
    at = crossing.time_s
    time_s = _interp(steps, sim_s, at)
    return {"steps": at, "time_s": time_s, "traffic": crossing.traffic,
            "censored": crossing.censored}


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    """``ys`` at ``x``, linear between the points of ``xs`` (from (0, 0); clamped at the end)."""
    prev_x, prev_y = 0.0, 0.0
    for xi, yi in zip(xs, ys):
        if x <= xi:
            return prev_y + (x - prev_x) / (xi - prev_x) * (yi - prev_y) if xi > prev_x else yi
        prev_x, prev_y = xi, yi
    return prev_y


def describe(runs: list[dict]) -> list[str]:
    """Lines about what the runs measured beside the comparisons: τ and N per regime."""
    lines = []
    for regime in REGIMES:
        rows = [r for r in runs if r["regime"] == regime.key]
        if not rows:
            continue
        taus = next((r["taus"] for r in rows if r.get("taus")), [])
        free = next((r["metrics"]["send_period"] for r in rows if r["arm"] == "cocodc"), None)
        stride = FULL["inner_steps"] // ARMS[0].overrides["fragments"]
        text = (f"{regime.label}: tau per fragment {'/'.join(map(str, taus))} steps; "
                f"Streaming DiLoCo and cocodc-N=P send a fragment every {stride} steps")
        if free is not None:
            n = FULL["inner_steps"] // int(free)
            text += f", cocodc (free N) every {free:.0f} (N = {n})"
        lines.append(text + ".")
    return lines
