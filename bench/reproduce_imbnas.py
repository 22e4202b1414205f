"""IMB-NAS: which way of adapting a balanced supernet to a long-tailed target works best?

Runs ``imb-nas`` (freeze the backbone, retrain the head with the class-balanced loss) and its
baselines ``imb-nas-finetune-ce``, ``imb-nas-finetune-rw`` and ``imb-nas-full-search`` on the
same long-tailed targets (exp profile, rho = 10 and 100), seeds, budget and emulated device (the
A6000 server of ``local-3``), and prints, per rho and method, the mean ± std over the seeds of
the balanced top-1 test accuracy, the many/medium/few-shot accuracies, and the search cost
(emulated seconds and FLOPs of adaptation + search; the source supernet is trained once per
seed, shared by the three adapting strategies, and listed apart). The paper's claim and whether
it held come before the table; the table is printed last.

    python bench/reproduce_imbnas.py [--quick] [--seeds N] [--rho R ...] [--dataset NAME]
                                     [--data-root PATH] [--max-per-class N]

Full mode: MNIST-5000, 3 seeds, rho 10 and 100, the methods' default config.
``--quick``: sklearn digits, 1 seed (about a minute). CIFAR-10: ``--dataset cifar10
--data-root FOLDER`` (the folder holding ``cifar-10-batches-py``), best with ``--max-per-class``
on a CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ml import registry  # noqa: E402
from ml.cli import format_table  # noqa: E402
from ml.reporting import MemoryReporter  # noqa: E402

METHODS = ("imb-nas", "imb-nas-finetune-rw", "imb-nas-finetune-ce", "imb-nas-full-search")
CLAIM = ("Paper's claim (IMB-NAS, arXiv 2210.00136; reproduction arXiv 2406.16972, CIFAR-LT): "
         "retraining the linear head with a re-weighted loss on the frozen balanced supernet is "
         "the most effective adaptation, at a fraction of a full NAS run's cost.")


def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [v * scale for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def run_all(args) -> tuple[dict, dict]:
    results: dict[tuple[float, str], list[dict]] = {}
    pretrain: dict[int, dict] = {}
    for rho in args.rho:
        for seed in range(args.seeds):
            for name in METHODS:
                method = registry.get(name)
                config = method.parse_config({**args.overrides, "dataset": args.dataset,
                                              "rho": rho, "seed": seed, "testbed": "local-3"})
                start = time.perf_counter()
                result = method.run(config, MemoryReporter())
                result["wall_s"] = time.perf_counter() - start
                results.setdefault((rho, name), []).append(result)
                if result["source_pretrain"] is not None:
                    pretrain.setdefault(seed, result["source_pretrain"])
                final = result["final"]
                print(f"rho={rho:g} seed={seed} {name:21s} balanced acc "
                      f"{final['accuracy']:.4f}  few {final['few_shot_accuracy']:.4f}  "
                      f"arch {result['arch']['label']}  ({result['wall_s']:.0f} s)", flush=True)
    return results, pretrain


def verdicts(results: dict, rhos: list[float]) -> list[str]:
    lines = []
    for rho in rhos:
        means = {name: statistics.mean(r["final"]["accuracy"] for r in results[(rho, name)])
                 for name in METHODS}
        best = max(means, key=means.get)
        ours = results[(rho, "imb-nas")]
        rival = max((n for n in METHODS if n != "imb-nas"), key=means.get)
        gap = means["imb-nas"] - means[rival]
        wins = sum(a["final"]["accuracy"] >= b["final"]["accuracy"]
                   for a, b in zip(ours, results[(rho, rival)]))
        cost = (statistics.mean(r["final"]["search_flops"] for r in ours)
                / statistics.mean(r["final"]["search_flops"] for r in results[(rho, rival)]))
        held = "HELD" if best == "imb-nas" else "DID NOT HOLD"
        lines.append(f"rho={rho:g}: claim {held}: best is {best}; imb-nas vs {rival} "
                     f"{gap * 100:+.1f} points balanced accuracy (imb-nas ahead or equal in "
                     f"{wins}/{len(ours)} seeds), at {cost:.2f}x its search FLOPs")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, 1 seed (about a minute)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--rho", type=float, nargs="+", default=[10.0, 100.0])
    parser.add_argument("--dataset", default=None, help="mnist (default), digits, cifar10")
    parser.add_argument("--data-root", default=None,
                        help="folder holding the CIFAR batches (sets ESTUARY_DATA_DIR)")
    parser.add_argument("--max-per-class", type=int, default=None,
                        help="cap on training images per class (to scale CIFAR down)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.data_root:
        os.environ["ESTUARY_DATA_DIR"] = args.data_root
    args.dataset = args.dataset or ("digits" if args.quick else "mnist")
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.overrides = {} if args.max_per_class is None else {"max_per_class": args.max_per_class}
    if args.dataset == "digits":
        args.overrides["val_per_class"] = 10

    wall = time.perf_counter()
    results, pretrain = run_all(args)
    defaults = registry.get("imb-nas").parse_config({"dataset": args.dataset, **args.overrides})
    rows = []
    for rho in args.rho:
        for name in METHODS:
            runs = results[(rho, name)]
            f = [r["final"] for r in runs]
            rows.append([
                f"{rho:g}", name,
                mean_std([x["accuracy"] for x in f], 100),
                mean_std([x["many_shot_accuracy"] for x in f], 100),
                mean_std([x["medium_shot_accuracy"] for x in f], 100),
                mean_std([x["few_shot_accuracy"] for x in f], 100),
                mean_std([x["search_cost_s"] for x in f], 1e3, 2),
                mean_std([x["search_flops"] for x in f], 1e-9, 0),
                f"{statistics.mean(r['budget']['train_steps'] for r in runs):.0f}",
                f"{statistics.mean(r['wall_s'] for r in runs):.0f}",
            ])
    source = next(iter(pretrain.values()), None)
    print()
    print(CLAIM)
    print(f"Setup: {args.dataset}, seeds 0..{args.seeds - 1}, {defaults.supernet_epochs} source "
          f"epochs, {defaults.adapt_epochs} adaptation epochs, {defaults.retrain_epochs} "
          f"retraining epochs, {defaults.search} search of {defaults.population} x "
          f"(1 + {defaults.generations}) subnets under {defaults.max_flops_fraction:g} of the "
          f"largest subnet's FLOPs; device a6000-server of local-3; total wall "
          f"{time.perf_counter() - wall:.0f} s.")
    if source:
        print(f"Source supernet (balanced, trained once per seed, reused by imb-nas and the "
              f"fine-tuning baselines; not in their search cost): {source['steps']} steps, "
              f"{source['flops'] / 1e9:.0f} GFLOPs, {source['sim_s'] * 1e3:.2f} ms emulated.")
    for line in verdicts(results, args.rho):
        print(line)
    print()
    print(format_table(
        ["rho", "method", "balanced top-1 %", "many %", "medium %", "few %",
         "search cost ms (sim)", "search GFLOPs", "train steps", "wall s"], rows))


if __name__ == "__main__":
    main()
