"""CoCoDC against Streaming DiLoCo and DiLoCo: steps and emulated time to a target perplexity.

Four regions of the ``cross-region-4`` preset (one H100 each, 1 Gbit/s WAN, 100 ms RTT) train
replicas of the small decoder on their own shards of the pydoc corpus. The emulated clock charges
each step as a 150M-parameter model on 8 × 1024 tokens (0.3 s on an H100; ours, chosen so that a
fragment's reduce overlaps 6-9 steps, near the paper's τ = 5 and below ⌊H/P⌋) and each reduce as
that model's fragment on the WAN, so τ and N follow from the preset (see docs/methods/diloco.md).
Every method runs over the same seeds; the table gives the mean and standard deviation over seeds of the final held-out perplexity and of the
steps and emulated time each needs to first reach two target perplexities (by default the worst
method's mean final perplexity, which all can reach, and 1.5 times it, reached mid-run), plus
traffic and emulated time spent blocked on the WAN.

    python bench/reproduce_cocodc.py [--quick] [--seeds N] [--targets PPL PPL] [--runs LABEL ...]

``--quick``: one seed and a short run (about a CPU-minute). ``--runs``: rows to run, among them
the ablations ``cocodc-N=P`` and ``cocodc-staggered`` (give ``--targets`` to compare with a
full run's table).
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
#: Sized to finish in about 20 minutes on a shared 2-core CPU (3 seeds x 3 methods x 250 steps).
FULL = {"inner_steps": 50, "rounds": 5, "warmup_steps": 25, "eval_every": 10}
QUICK = {"inner_steps": 40, "rounds": 3, "warmup_steps": 20, "eval_every": 10,
         "eval_windows": 128}

#: (row label, method, overrides): the CoCoDC authors' settings (arXiv 2504.17672): DiLoCo outer
#: lr 0.7, Streaming DiLoCo 4 strided fragments with α = 0.5 and outer lr 0.4, CoCoDC λ₀ = 1.
RUNS: list[tuple[str, str, dict]] = [
    ("diloco", "diloco", {"outer_lr": 0.7}),
    ("streaming-diloco", "streaming-diloco", {"outer_lr": 0.4, "fragments": 4, "alpha": 0.5}),
    ("cocodc", "cocodc", {"outer_lr": 0.4, "fragments": 4, "dc_lambda": 1.0}),
]

#: Ablations (``--runs``), to tell CoCoDC's two parts apart: Adaptive Transmission held to N = P
#: sends per H (the same send count as Streaming DiLoCo, where the link-derived N may be larger),
#: and the delay compensation alone on Streaming DiLoCo's staggered timetable.
ABLATIONS: list[tuple[str, str, dict]] = [
    ("cocodc-N=P", "cocodc", {"outer_lr": 0.4, "fragments": 4, "dc_lambda": 1.0,
                              "transmissions_per_round": 4}),
    ("cocodc-staggered", "cocodc", {"outer_lr": 0.4, "fragments": 4, "dc_lambda": 1.0,
                                    "transmission": "staggered"}),
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
    parser.add_argument("--targets", type=float, nargs=2, default=None,
                        help="two target perplexities (default: 1.5x and 1x the worst method's "
                             "mean final one)")
    parser.add_argument("--runs", nargs="+", default=None,
                        help="row labels to run (default: the three methods); also "
                             + ", ".join(label for label, _, _ in ABLATIONS))
    args = parser.parse_args()
    catalogue = {label: (label, method, o) for label, method, o in RUNS + ABLATIONS}
    unknown = set(args.runs or []) - set(catalogue)
    if unknown:
        parser.error(f"unknown --runs {sorted(unknown)}; known: {sorted(catalogue)}")
    selected = [catalogue[label] for label in args.runs] if args.runs else RUNS
    torch.set_num_threads(1)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    schedule = QUICK if args.quick else FULL
    started = time.perf_counter()

    runs: dict[str, list[dict]] = {label: [] for label, _, _ in selected}
    for seed in seeds:
        for label, method, overrides in selected:
            config = {**COMMON, **schedule, **overrides, "seed": seed}
            t0 = time.perf_counter()
            runs[label].append(run_one(method, config))
            final = runs[label][-1]["result"]["final"]
            print(f"seed {seed} {label}: final perplexity {final['perplexity']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s wall)", flush=True)

    final_ppl = {label: [r["result"]["final"]["perplexity"] for r in rs] for label, rs in runs.items()}
    worst = max(statistics.mean(v) for v in final_ppl.values())
    targets = args.targets or [1.5 * worst, worst]

    rows, steps_to = [], {}
    for label, rs in runs.items():
        summaries = [r["result"] for r in rs]
        row = [label, mean_sd(final_ppl[label], "{:.3f}")]
        for i, target in enumerate(targets):
            reached = [first_reach(r["curve"], target) for r in rs]
            steps = [float(x[0]) for x in reached if x]
            minutes = [x[1] / 60 for x in reached if x]
            steps_to[(label, i)] = steps if len(steps) == len(rs) else None
            row += [mean_sd(steps, "{:.0f}"), mean_sd(minutes, "{:.1f}"),
                    f"{len(steps)}/{len(rs)}"]
        frag = summaries[0]["fragments"]
        row += [
            mean_sd([s["final"]["sim_time_s"] / 60 for s in summaries], "{:.1f}"),
            f"{statistics.mean(s['final']['traffic_bytes'] for s in summaries) / 1e9:.1f}",
            f"{statistics.mean(s['final']['waiting_time_s'] for s in summaries) / 60:.1f}",
            "/".join(str(f["overlap_steps"]) for f in frag),
            str(summaries[0]["send_period"] or "-"),
        ]
        rows.append(row)

    steps_total = schedule["inner_steps"] * schedule["rounds"]
    print(f"\n{CLAIM}")
    print(f"Setup: 4 regions (cross-region-4: H100s, 1 Gbit/s, 100 ms RTT), decoder "
          f"d={MODEL['d_model']} x {MODEL['layers']} layers, H={schedule['inner_steps']}, "
          f"{steps_total} steps, seeds {seeds}, emulated 150M params x 8k tokens/step; "
          f"wall {time.perf_counter() - started:.0f} s")
    compared = "cocodc" in runs and "streaming-diloco" in runs
    for i, target in enumerate(targets if compared else []):
        cocodc, streaming = steps_to[("cocodc", i)], steps_to[("streaming-diloco", i)]
        if cocodc and streaming:
            fewer = 100 * (1 - statistics.mean(cocodc) / statistics.mean(streaming))
            print(f"Measured: to perplexity {target:.3f}, CoCoDC needs {fewer:.1f}% fewer steps "
                  f"than Streaming DiLoCo (negative: more)")
        else:
            print(f"Measured: to perplexity {target:.3f}, CoCoDC or Streaming DiLoCo missed it "
                  f"in some seeds (see 'reached')")
    print()
    headers = ["method", "final ppl"]
    for target in targets:
        headers += [f"steps to {target:.2f}", "emul. min", "reached"]
    headers += ["emul. min total", "traffic GB", "blocked min", "tau/fragment", "send every"]
    print(format_table(headers, rows))


if __name__ == "__main__":
    main()
