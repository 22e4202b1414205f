"""COMP against its baselines at 10%, 20% and 30% pruning of the same pre-trained decoder LM.

Runs the catalogue's ``comp``, ``llm-pruner``, ``llm-pruner-lora``, ``wanda-channel`` and
``layer-prune`` jobs (ml.algorithms.llm_compression) on the same model, calibration set, budget and
evaluation, and prints per ratio and method: achieved pruning ratio, parameters, held-out
perplexity, next-word choice accuracy (4 candidates, chance 25%), peak pruning memory, pruning
time and measured forward latency. Then the paper's claim beside what we measured at 20%; the
table is printed last.

    python bench/reproduce_comp.py [--quick] [--ratios 0.1 0.2 0.3] [--methods comp ...]
                                   [--seeds N] [--checkpoint FOLDER]

Full mode: the ``small`` LM pre-trained on pydoc (~0.9 M parameters, 4 blocks; trained once and
cached under $ESTUARY_DATA_DIR/models), 32 calibration sequences of 128 bytes, 64 held-out
windows for perplexity, 300 task questions, 60 LoRA recovery steps. ``--quick``: the ``tiny``
LM (~70 k parameters, 300 pre-training steps), 8 calibration sequences of 32 bytes, smaller
evaluation (about 70 s of CPU on one core, its pre-training included the first time).
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

METHODS = ("comp", "llm-pruner", "llm-pruner-lora", "wanda-channel", "layer-prune")
CLAIM = ("Paper's claim (COMP, arXiv 2501.15255, LLaMA-2-7B at 20% pruning): +6.13% average "
         "zero-shot accuracy over LLM-Pruner, with 80% less memory overhead during pruning.")

FULL = {"model_size": "small", "pretrain_steps": 600, "seq_len": 128, "calibration_size": 32, "eval_windows": 64,
        "task_items": 300, "latency_repeats": 10, "batch_size": 8, "recovery_steps": 60}
QUICK = {"model_size": "tiny", "pretrain_steps": 300, "seq_len": 32, "calibration_size": 8,
         "eval_windows": 32, "task_items": 100, "latency_repeats": 3, "batch_size": 8,
         "recovery_steps": 20}


def run_all(args) -> dict[tuple[float, str], list[dict]]:
    base = dict(QUICK if args.quick else FULL)
    if args.checkpoint:
        base["checkpoint"] = args.checkpoint
    results: dict[tuple[float, str], list[dict]] = {}
    for ratio in args.ratios:
        for name in args.methods:
            for seed in range(args.seeds):
                method = registry.get(name)
                known = method.config.model_fields
                values = {k: v for k, v in {**base, "ratio": ratio, "seed": seed}.items()
                          if k in known}
                start = time.perf_counter()
                out = method.run(method.parse_config(values), MemoryReporter())
                out["final"]["wall_s"] = time.perf_counter() - start
                results.setdefault((ratio, name), []).append(out["final"])
                f = out["final"]
                print(f"[{ratio:.0%} {name} seed {seed}] ppl {f['perplexity']:.3f} acc "
                      f"{f['accuracy']:.3f} peak {f['prune_peak_memory_bytes'] / 2**20:.2f} MiB "
                      f"({f['wall_s']:.1f} s)", file=sys.stderr, flush=True)
    return results


def mean(rows: list[dict], key: str) -> float:
    return statistics.mean(r[key] for r in rows)


def show(rows: list[dict], key: str, fmt: str, scale: float = 1.0) -> str:
    values = [r[key] * scale for r in rows]
    text = format(statistics.mean(values), fmt)
    if len(values) > 1:
        text += " ± " + format(statistics.stdev(values), fmt)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--checkpoint", default=None,
                        help="local Hugging Face Llama-style folder to prune instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    wall = time.perf_counter()
    results = run_all(args)

    first = next(iter(results.values()))
    dense = (f"dense model: {first[0]['dense_params']:.0f} parameters, perplexity "
             f"{first[0]['dense_perplexity']:.3f}, accuracy {first[0]['dense_accuracy']:.3f}, "
             f"latency {first[0]['dense_latency_ms']:.2f} ms")
    rows = []
    for (ratio, name), runs in results.items():
        rows.append([f"{ratio:.0%}", name, show(runs, "achieved_ratio", ".1%"),
                     f"{mean(runs, 'params'):.0f}", show(runs, "perplexity", ".3f"),
                     show(runs, "accuracy", ".1f", 100), show(runs, "prune_peak_memory_bytes",
                                                               ".2f", 1 / 2**20),
                     show(runs, "prune_time_s", ".2f"), show(runs, "latency_ms", ".2f")])
    print(CLAIM)
    for ratio in args.ratios:
        comp, pruner = results.get((ratio, "comp")), results.get((ratio, "llm-pruner"))
        if comp and pruner:
            gain = 100 * (mean(comp, "accuracy") - mean(pruner, "accuracy"))
            saving = 1 - mean(comp, "prune_peak_memory_bytes") / mean(pruner,
                                                                      "prune_peak_memory_bytes")
            print(f"measured at {ratio:.0%}: COMP - LLM-Pruner accuracy {gain:+.1f} points "
                  f"(perplexity {mean(comp, 'perplexity'):.3f} vs {mean(pruner, 'perplexity'):.3f}); "
                  f"peak pruning memory {saving:.0%} lower")
    print(dense)
    print(f"bench wall time {time.perf_counter() - wall:.0f} s "
          f"({'quick' if args.quick else 'full'} mode, 1 torch thread)")
    print()
    print(format_table(["ratio", "method", "achieved", "params", "perplexity", "accuracy %",
                        "peak MiB", "prune s", "latency ms"], rows))


if __name__ == "__main__":
    main()
