"""CoCoDC against Streaming DiLoCo and DiLoCo: steps and emulated time to a target perplexity.

Four regions of the ``cross-region-4`` preset (one H100 each, 1 Gbit/s WAN, 100 ms RTT) train
replicas of the small decoder on their own shards of the pydoc corpus. The emulated clock charges
each step as a 150M-parameter model on 8 × 1024 tokens (0.3 s on an H100, the authors'
``simulated_comp_time``) and each reduce as that model's fragment on the WAN, so τ and N follow
from the preset (see docs/methods/cocodc.md). Every method runs over the same seeds; the table
gives the mean and standard deviation over seeds of the final held-out perplexity and of the
steps and emulated time each needs to first reach the target perplexity (by default the worst
method's mean final perplexity, so that all can reach it), plus traffic and time spent blocked.

    python bench/reproduce_cocodc.py [--quick] [--seeds N] [--target PPL]

``--quick``: one seed and a short run (about a minute).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ml import registry  # noqa: E402
from ml.cli import format_table  # noqa: E402
from ml.reporting import MemoryReporter  # noqa: E402

MODEL = {"d_model": 32, "layers": 4, "heads": 2, "batch_size": 16, "seq_len": 32}
COMMON = {**MODEL, "workers": 4, "testbed": "cross-region-4", "inner_lr": 3e-3,
          "weight_decay": 0.1, "emulated_params": 150_000_000,
          "emulated_tokens_per_step": 8 * 1024, "eval_windows": 256}
FULL = {"inner_steps": 50, "rounds": 12, "warmup_steps": 50, "eval_every": 10}
QUICK = {"inner_steps": 20, "rounds": 6, "warmup_steps": 20, "eval_every": 10,
         "eval_windows": 128}

#: (row label, method, overrides): the authors' settings (papers.md §1.3): DiLoCo outer lr 0.7,
#: Streaming DiLoCo 4 strided fragments with α = 0.5 and outer lr 0.4, CoCoDC λ₀ = 1.
RUNS: list[tuple[str, str, dict]] = [
    ("diloco", "diloco", {"outer_lr": 0.7}),
    ("streaming-diloco", "streaming-diloco", {"outer_lr": 0.4, "fragments": 4, "alpha": 0.5}),
    ("cocodc", "cocodc", {"outer_lr": 0.4, "fragments": 4, "dc_lambda": 1.0}),
]

CLAIM = ("Paper (arXiv 2504.17672; Llama-150M on C4, 4 regions, H=100, tau=5, N=8): CoCoDC needs "
         "up to 21.0% fewer steps than Streaming DiLoCo to reach a comparable perplexity.")


def run_one(method: str, config: dict) -> dict:
    """Train once; return the perplexity curve (step, sim time, value) and the summary."""
    entry = registry.get(method)
    reporter = MemoryReporter()
    result = entry.run(entry.parse_config(config), reporter)
    curve = [(p.step, p.sim_time_s, p.value) for p in reporter.series("perplexity")]
    return {"curve": curve, "result": result}


def first_reach(curve: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    """(step, emulated seconds) of the first evaluation at or below ``target``."""
    return next(((step, t) for step, t, ppl in curve if ppl <= target), None)


def mean_sd(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, short run (~1 minute)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3, quick 1)")
    parser.add_argument("--target", type=float, default=None,
                        help="target perplexity (default: the worst method's mean final one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    schedule = QUICK if args.quick else FULL
    started = time.perf_counter()

    runs: dict[str, list[dict]] = {label: [] for label, _, _ in RUNS}
    for seed in seeds:
        for label, method, overrides in RUNS:
            config = {**COMMON, **schedule, **overrides, "seed": seed}
            t0 = time.perf_counter()
            runs[label].append(run_one(method, config))
            final = runs[label][-1]["result"]["final"]
            print(f"seed {seed} {label}: final perplexity {final['perplexity']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s wall)", file=sys.stderr)

    final_ppl = {label: [r["result"]["final"]["perplexity"] for r in rs] for label, rs in runs.items()}
    target = args.target or max(statistics.mean(v) for v in final_ppl.values())

    rows, steps_to = [], {}
    for label, rs in runs.items():
        reached = [first_reach(r["curve"], target) for r in rs]
        steps = [float(x[0]) for x in reached if x]
        times = [x[1] / 3600 for x in reached if x]
        steps_to[label] = steps if len(steps) == len(rs) else None
        summaries = [r["result"] for r in rs]
        frag = summaries[0]["fragments"]
        rows.append([
            label,
            mean_sd(final_ppl[label], "{:.3f}"),
            mean_sd(steps, "{:.0f}"),
            mean_sd(times, "{:.2f}"),
            f"{len(steps)}/{len(rs)}",
            mean_sd([s["final"]["sim_time_s"] / 3600 for s in summaries], "{:.2f}"),
            f"{statistics.mean(s['final']['traffic_bytes'] for s in summaries) / 1e9:.1f}",
            f"{statistics.mean(s['final']['waiting_time_s'] for s in summaries) / 3600:.2f}",
            ",".join(str(f["overlap_steps"]) for f in frag),
            str(summaries[0]["send_period"] or "-"),
        ])

    steps_total = schedule["inner_steps"] * schedule["rounds"]
    print(f"\n{CLAIM}")
    print(f"Setup: 4 regions (cross-region-4: H100s, 1 Gbit/s, 100 ms RTT), decoder "
          f"d={MODEL['d_model']} x {MODEL['layers']} layers, H={schedule['inner_steps']}, "
          f"{steps_total} steps, seeds {seeds}, emulated 150M params x 8k tokens/step; "
          f"target perplexity {target:.3f}; wall {time.perf_counter() - started:.0f} s")
    if steps_to.get("cocodc") and steps_to.get("streaming-diloco"):
        fewer = 1 - statistics.mean(steps_to["cocodc"]) / statistics.mean(steps_to["streaming-diloco"])
        print(f"Measured: CoCoDC needs {100 * fewer:.1f}% fewer steps than Streaming DiLoCo "
              f"to perplexity {target:.3f}")
    print()
    print(format_table(
        ["method", "final ppl", "steps to target", "hours to target", "reached", "hours total",
         "traffic GB", "blocked h", "tau per fragment", "send every"], rows))


if __name__ == "__main__":
    main()
