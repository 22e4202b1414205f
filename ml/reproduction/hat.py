"""The HAT reproduction (arXiv 2503.18989): U-shaped device-cloud inference with speculative
decoding and prompt chunking, against the U-shaped split, device-cloud SD and cloud-only.

Declared here, before any run:

- **Model and clock.** The real passes (they decide every token and so the drafts' acceptance)
  run on ``hat-12`` (:mod:`ml.models.pretraining`): 12 decoder blocks, BPE 512 on the offline
  pydoc corpus, 320-token context, cut 1 + 10 + 1 with a one-block adapter. The clock charges a
  Llama-2-7B shape with every part at the served LM's *share* of its depth
  (``served_model=llama2-7b-proportional``): input, output and adapter 32/12 = 2.67 layers each,
  the middle 26.67, so the adapter stands in for the same share of the model as it drafts for
  (the earlier bench's 4-block LM let it stand in for half the model while the clock charged 1
  of 32 layers). SD's draft is a 2-block LM of the same width and BPE, charged as a 68M Llama.
- **Requests.** Every device sends one 256-token held-out prompt at time 0 and generates 32
  tokens greedily (all four methods emit the same tokens); the seed draws the prompts, so a
  seed's four arms serve the same prompts (paired).
- **Regimes** (one factor at a time around the headline: 10 mixed Jetsons, RTT 50 ms, the
  devices' own uplinks, the whole 8xA6000 cloud): RTT 10 / 100 ms; every uplink at 10 or
  100 Mbit/s; 10 devices of one type (TX2, NX, AGX Orin: reported separately); 1 and 30
  devices; 30 devices on a congested cloud (``cloud_share`` 0.25 and 0.1: the fraction of the
  server's compute and memory bandwidth left to this service).
- **Claims.** TTFT -41% (the lower end of the paper's -41..54%) and TBT -41% (-41..77%),
  each against each baseline, as the paired ratio baseline / HAT >= 1 / (1 - 0.41) = 1.69 over
  5 seeds (95% t-interval of the log ratio).
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import torch

from ml import registry
from ml.reporting import MemoryReporter
from ml.reproduction.declaration import Arm, Claim, Comparison, Declaration, Regime

ARMS = (
    Arm("hat", "hat"),
    Arm("u-shaped-inference", "u-shaped-inference"),
    Arm("device-cloud-sd", "device-cloud-sd"),
    Arm("cloud-only-inference", "cloud-only-inference"),
)
BASELINES = ("u-shaped-inference", "device-cloud-sd", "cloud-only-inference")

#: "-41%" as the ratio baseline / HAT: 1 / (1 - 0.41).
REDUCTION = 0.41
RATIO = 1 / (1 - REDUCTION)


def _claims() -> tuple[Claim, ...]:
    claims = []
    for metric, name, span in (("ttft_ms", "TTFT", "41-54%"), ("tbt_ms", "TBT", "41-77%")):
        for baseline in BASELINES:
            claims.append(Claim(
                f"{name.lower()}-vs-{baseline}",
                f"HAT cuts {name} by at least 41% (paper: {span}) against {baseline}.",
                (Comparison("hat", baseline, metric, "ratio", "lower", RATIO),)))
    return tuple(claims)


CLAIMS = _claims()

#: Jetson profiles of the sweep, in the preset's order (10 TX2, 10 NX, 10 AGX Orin).
TYPES = {"tx2": "jetson-tx2", "nx": "jetson-nx", "orin": "jetson-agx-orin"}


def devices(count: int, kind: str = "mixed") -> list[str]:
    """Profiles of ``count`` devices: one type, or ``mixed`` as the preset's stratified choice
    (TX2 first: 1 -> TX2; 10 -> 4 TX2, 3 NX, 3 Orin; 30 -> 10 of each)."""
    if kind != "mixed":
        return [TYPES[kind]] * count
    order = list(TYPES.values())
    base, extra = divmod(count, len(order))
    return [p for i, p in enumerate(order) for _ in range(base + (i < extra))]


def testbed(count: int, kind: str = "mixed", rtt_ms: float | None = None,
            uplink_mbps: float | None = None) -> list[dict[str, Any]]:
    """The regime's device list (a config ``testbed``): the Jetsons with their RTT and uplink
    overridden when given, then the 8xA6000 server."""
    items: list[dict[str, Any]] = []
    for i, profile in enumerate(devices(count, kind)):
        item: dict[str, Any] = {"profile": profile, "name": f"{profile}-{i + 1:02d}"}
        if rtt_ms is not None:
            item["rtt_ms"] = rtt_ms
        if uplink_mbps is not None:
            item["uplink_mbps"] = uplink_mbps
        items.append(item)
    return items + [{"profile": "a6000-server", "name": "a6000-server"}]


def _regime(key: str, label: str, count: int = 10, kind: str = "mixed", rtt_ms: float = 50.0,
            uplink_mbps: float | None = None, cloud_share: float = 1.0) -> Regime:
    settings: dict[str, Any] = {"workers": count, "devices": kind, "rtt_ms": rtt_ms,
                                "uplink_mbps": uplink_mbps, "cloud_share": cloud_share}
    return Regime(key, label, settings)


REGIMES = (
    _regime("mixed-10", "10 mixed, RTT 50 ms"),
    _regime("rtt-10", "RTT 10 ms", rtt_ms=10.0),
    _regime("rtt-100", "RTT 100 ms", rtt_ms=100.0),
    _regime("uplink-10", "uplink 10 Mbit/s", uplink_mbps=10.0),
    _regime("uplink-100", "uplink 100 Mbit/s", uplink_mbps=100.0),
    _regime("tx2-10", "10 TX2", kind="tx2"),
    _regime("nx-10", "10 NX", kind="nx"),
    _regime("orin-10", "10 AGX Orin", kind="orin"),
    _regime("devices-1", "1 device (TX2)", count=1),
    _regime("devices-30", "30 mixed", count=30),
    _regime("congested-30", "30 mixed, cloud 25%", count=30, cloud_share=0.25),
    _regime("congested-30-10", "30 mixed, cloud 10%", count=30, cloud_share=0.1),
)

#: The shared settings of the full mode (every arm, every regime).
FULL = {"lm_size": "hat-12", "served_model": "llama2-7b-proportional", "prompt_tokens": 256,
        "new_tokens": 32, "temperature": 0.0, "gamma": 4, "draft_window": 64,
        "distill_steps": 300}
#: ``--quick``: the 12-block ``deep-tiny`` (64-token context), short prompts, fewer steps.
QUICK = {"lm_size": "deep-tiny", "served_model": "llama2-7b-proportional", "prompt_tokens": 40,
         "new_tokens": 12, "temperature": 0.0, "gamma": 4, "draft_window": 32,
         "distill_steps": 60, "draft_steps": 100}
QUICK_REGIME = "mixed-10"
QUICK_SEEDS = (0, 1)

REPORT_METRICS = ["ttft_ms", "tbt_ms", "acceptance_rate", "tokens_per_round",
                  "ttft_ms_tx2", "ttft_ms_nx", "ttft_ms_orin", "tbt_ms_tx2", "tbt_ms_nx",
                  "tbt_ms_orin", "cloud_mean_batch_requests"]

TARGET = {"report_metrics": REPORT_METRICS, "lm_size": FULL["lm_size"],
          "served_model": FULL["served_model"], "prompt_tokens": FULL["prompt_tokens"],
          "new_tokens": FULL["new_tokens"], "claimed_ratio": round(RATIO, 4)}

HEADLINE = "mixed-10"


def run_config(regime: Regime, settings: dict, seed: int) -> dict[str, Any]:
    """The config every arm of ``regime`` runs with ``seed`` (before restricting to the keys a
    method knows)."""
    s = regime.settings
    workers = settings.get("workers", s["workers"])
    return {**{k: v for k, v in settings.items() if k != "workers"},
            "testbed": testbed(workers, s["devices"], s["rtt_ms"], s["uplink_mbps"]),
            "workers": workers, "cloud_share": s["cloud_share"], "seed": seed}


DECLARATION = Declaration(
    key="hat",
    paper="HAT (U-shaped device-cloud inference with speculative decoding and prompt "
          "chunking)",
    arxiv="2503.18989",
    setting="Every Jetson sends one 256-token held-out prompt (pydoc, BPE 512) at time 0 to "
            "an 8xA6000 server and generates 32 tokens greedily; the cloud batches every "
            "device's requests (roofline clock, FIFO queue). The real passes run on a 12-block "
            "decoder (0.19 M parameters) cut 1 + 10 + 1 with a one-block distilled adapter; "
            "the clock charges a Llama-2-7B shape in fp16 with each part at the served LM's "
            "share of its depth (device input, output and adapter 2.67 layers each, cloud "
            "middle 26.67). Baselines: the same U-shaped cut without speculation or chunking; "
            "device-cloud speculative decoding with a separate 2-block draft LM (charged as a "
            "68M Llama) sending tokens; cloud-only inference. TTFT and TBT are means over the "
            "devices of a run.",
    claims=CLAIMS,
    arms=ARMS,
    regimes=REGIMES,
    headline=HEADLINE,
    seeds=tuple(range(5)),
    target=TARGET,
    differences=(
        "Model: a 0.19 M-parameter 12-block BPE decoder on a 0.5 MB corpus decides the tokens "
        "and the drafts' acceptance; the paper serves a real LLM (the abstract does not name "
        "it). The clock charges a Llama-2-7B shape, so times are a 7B model's but acceptance "
        "is the small model's.",
        "Share of layers: the adapter replaces 10 of 12 blocks and the clock charges each "
        "device part as 32/12 = 2.67 of the 7B's layers (ours), not the paper's 1 of 32.",
        "Devices, links and the cloud's load are our reconstruction: Jetson TX2/NX/AGX Orin "
        "datasheet compute and memory bandwidth, their own uplinks (20/40/100 Mbit/s) unless "
        "the regime sets them, one request per device at time 0 (no arrival process), the "
        "cloud's congestion as the share of the server left to this service.",
        "The paper's baselines, prompts and figures beyond the abstract are not known to us; "
        "its claim is stated against its baselines together, ours against each.",
    ),
    launch={"algorithm": "hat", "baselines": list(BASELINES),
            "config": {k: v for k, v in run_config(REGIMES[0], FULL, 0).items()
                       if k != "seed"}},
)


def _per_type(devices_rows: list[dict], metric: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for short, profile in TYPES.items():
        values = [row[metric] for row in devices_rows if row["device"].startswith(profile)]
        out[f"{metric}_{short}"] = sum(values) / len(values) if values else None
    return out


def run_arm(regime: Regime, arm: Arm, seed: int, context: dict) -> dict:
    """Serve ``regime``'s requests with ``arm``'s method and ``seed``'s prompts; its record."""
    torch.set_num_threads(context.get("threads", 1))
    method = registry.get(arm.method)
    config = run_config(regime, context["settings"], seed)
    known = method.config.model_fields
    values = {k: v for k, v in {**config, **arm.overrides}.items() if k in known}
    # CPU time too, as the split-FL and COMP runs record it: this process's own, so a run's
    # cost reads the same whatever else loads the shared machine (wall time does not)
    start, cpu = time.perf_counter(), time.process_time()
    result = method.run(method.parse_config(values), MemoryReporter())
    final = result["final"]
    rows = result.get("devices", [])
    metrics = {k: final.get(k) for k in ("ttft_ms", "tbt_ms", "acceptance_rate",
                                         "tokens_per_round", "uplink_bytes_per_token",
                                         "prefill_uplink_bytes", "sim_time_s",
                                         "cloud_mean_batch_requests")}
    metrics.update(_per_type(rows, "ttft_ms"))
    metrics.update(_per_type(rows, "tbt_ms"))
    return {"regime": regime.key, "arm": arm.label, "seed": seed, "metrics": metrics,
            "censored": [], "curve": {},
            "models": {k: v for k, v in result.get("models", {}).items()
                       if isinstance(v, (int, float, str))},
            "chunk_sizes": result.get("chunk_sizes", []),
            "outputs_sha256": outputs_digest([row.get("output") for row in rows]),
            "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}


def describe(runs: list[dict]) -> list[str]:
    """Lines about the models and the outputs measured in ``runs`` (printed under the
    setting)."""
    if not runs:
        return []
    lines = []
    hat = next((r for r in runs if r["arm"] == "hat"), None)
    sd = next((r for r in runs if r["arm"] == "device-cloud-sd"), None)
    if hat is not None:
        m = hat["models"]
        lines.append(
            f"Served LM: {m.get('llm_params', 0) / 1e6:.2f} M parameters, held-out perplexity "
            f"{m.get('llm_val_perplexity', float('nan')):.1f} (unigram "
            f"{m.get('llm_unigram_perplexity', float('nan')):.0f}); adapter "
            f"{m.get('adapter_params', 0):,} parameters, held-out top-1 agreement with the LM "
            f"{m.get('draft_top1_agreement', float('nan')):.3f}, expected acceptance "
            f"{m.get('draft_expected_acceptance', float('nan')):.3f}.")
    if sd is not None:
        m = sd["models"]
        lines.append(f"SD's draft LM: {m.get('draft_params', 0):,} parameters, held-out "
                     f"perplexity {m.get('draft_val_perplexity', float('nan')):.1f}.")
    for arm in ("hat", "device-cloud-sd"):
        rates = [r["metrics"]["acceptance_rate"] for r in runs if r["arm"] == arm
                 and r["metrics"].get("acceptance_rate") is not None]
        if rates:
            lines.append(f"{arm} acceptance over all runs: {min(rates):.2f}-{max(rates):.2f}.")
    chunks = sorted({c for r in runs if r["arm"] == "hat" for c in r.get("chunk_sizes", [])})
    if chunks:
        lines.append(f"HAT's chosen chunk sizes: {', '.join(map(str, chunks))} tokens.")
    same = _same_tokens(runs)
    lines.append(f"Greedy outputs identical across the four methods in {same[0]} of {same[1]} "
                 f"(regime, seed) pairs.")
    return lines


def outputs_digest(outputs: list) -> str:
    """A short digest of every device's generated tokens (the record keeps this, not the
    tokens: enough to check that the four methods emitted the same ones)."""
    return hashlib.sha256(json.dumps(outputs).encode()).hexdigest()[:16]


def _same_tokens(runs: list[dict]) -> tuple[int, int]:
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r["regime"], r["seed"]), []).append(r.get("outputs_sha256"))
    full = [g for g in groups.values() if len(g) == len(ARMS)]
    return sum(all(t == g[0] for t in g) for g in full), len(full)


def plot_latencies(document: dict, path) -> str | None:
    """TTFT and TBT of every arm per regime (mean over seeds, log scale; error bars: min-max
    over seeds): the figures the verdicts compare. Returns the file name, None if no runs."""
    import numpy as np

    from ml.reproduction.report import _pyplot

    runs = document["runs"]
    if not runs:
        return None
    labels = {r["key"]: r["label"] for r in document["declaration"]["regimes"]}
    regimes = [k for k in labels if any(r["regime"] == k for r in runs)]
    arms = [a["label"] for a in document["declaration"]["arms"]]
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 0.8 * len(regimes) + 3), 6.4), dpi=100,
                             sharex=True)
    width = 0.8 / len(arms)
    for ax, metric, name in zip(axes, ("ttft_ms", "tbt_ms"), ("TTFT (ms)", "TBT (ms)")):
        for i, arm in enumerate(arms):
            means, lows, highs = [], [], []
            for key in regimes:
                values = [r["metrics"].get(metric) for r in runs
                          if r["regime"] == key and r["arm"] == arm]
                values = [v for v in values if v is not None]
                mean = float(np.mean(values)) if values else np.nan
                means.append(mean)
                lows.append(mean - min(values) if values else 0.0)
                highs.append(max(values) - mean if values else 0.0)
            x = np.arange(len(regimes)) + (i - (len(arms) - 1) / 2) * width
            ax.bar(x, means, width, yerr=[lows, highs], label=arm, color=f"C{i}", capsize=2)
        ax.set_yscale("log")
        ax.set_ylabel(name, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7, ncol=len(arms), loc="lower left", bbox_to_anchor=(0, 1.0))
    axes[1].set_xticks(range(len(regimes)), [labels[k] for k in regimes], rotation=25,
                       ha="right", fontsize=7)
    fig.suptitle("HAT and its baselines per regime: mean over seeds, bars min-max", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.name
