"""FedSpine against its baselines at equal sparsity on an emulated heterogeneous testbed.

    .venv/bin/python bench/reproduce_fedspine.py --quick     # ~1.5 min of CPU on one thread
    .venv/bin/python bench/reproduce_fedspine.py             # full: more clients and rounds
    .venv/bin/python bench/reproduce_fedspine.py --central   # the task's central references

Runs ``fedspine`` and, at the same target sparsity, ``fedlora`` and ``hetlora`` (one-shot
pruning in round 1 with the same LoRA-gradient importance) and ``prune-then-finetune``
(magnitude pruning before fine-tuning), plus unpruned ``fedlora`` as a reference. Clients are
a stratified subset of ``jetson80`` (TX2 / NX / AGX Orin), data split Dirichlet(0.5).

Time-to-accuracy: the emulated time at which a method's test accuracy (mean over the clients'
deployed pruned models) first reaches the target, the lowest best-accuracy among the
equal-sparsity methods (so each reaches it). The paper claims 1.4x-6.9x faster fine-tuning and
+0.4 to +4.5 accuracy points at equal sparsity; the table ends the output.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.algorithms.federated_fine_tuning import FEDLORA, FEDSPINE, HETLORA, PRUNE_THEN_FINETUNE  # noqa: E402
from ml.reporting import MemoryReporter  # noqa: E402


def settings(quick: bool, seed: int) -> dict:
    if quick:
        # One TX2, one NX, one AGX Orin; ~1.5 min of CPU for the five runs (ours).
        return {"workers": 3, "rounds": 4, "local_steps": 20, "test_samples": 150, "seed": seed}
    return {"workers": 6, "rounds": 10, "local_steps": 20, "test_samples": 300, "seed": seed}


def runs(sparsity: float, prune_every: int) -> list[tuple[str, object, dict]]:
    pruned = {"target_sparsity": sparsity}
    return [
        ("fedspine", FEDSPINE, {**pruned, "prune_every": prune_every}),
        ("fedlora@S", FEDLORA, {**pruned, "prune_every": prune_every}),
        ("hetlora@S", HETLORA, {**pruned, "prune_every": prune_every}),
        ("prune-then-finetune", PRUNE_THEN_FINETUNE, pruned),
        ("fedlora (unpruned)", FEDLORA, {}),
    ]


def central(task: str, steps: int = 300, seed: int = 0) -> list[tuple[str, float]]:
    """Central references on ``task``: majority class, a head-only probe on the frozen base and
    LoRA (rank 8, every projection) + head, ``steps`` AdamW steps of batch 16 at lr 3e-3."""
    from torch.nn import functional as F

    from ml.algorithms.federated_fine_tuning.structure import LORA_TARGETS
    from ml.algorithms.federated_fine_tuning.task import TopicClassifier, load_base, load_topic_data
    from ml.models.lora import apply_lora

    data = load_topic_data(seq_len=64, seed=0, max_test=600, task=task)
    rows = [("majority class", torch.bincount(data.test_y).max().item() / len(data.test_y))]
    for name, rank in (("head-only probe", 0), ("LoRA r=8 + head", 8)):
        torch.manual_seed(seed)
        base, _ = load_base("small")
        model = TopicClassifier(base, data.num_classes)
        if rank:
            apply_lora(model.decoder, LORA_TARGETS, rank=rank, alpha=float(rank))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            b = torch.randint(len(data.train_y), (16,), generator=gen)
            loss = F.cross_entropy(model(data.train_x[b]), data.train_y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (model(data.test_x).argmax(1) == data.test_y).float().mean().item()
        rows.append((name, acc))
    return rows


def time_to(series: list[tuple[float, float]], target: float) -> float | None:
    for sim, acc in series:
        if acc >= target - 1e-9:
            return sim
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, about a minute")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--central", action="store_true",
                        help="only the central references of the downstream tasks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.central:
        table = {task: central(task, seed=args.seed) for task in ("source-kinds", "pydoc-topics")}
        print(f"\ncentral references, small base, 300 steps, 600 test windows (seed {args.seed})")
        print(f"{'reference':<18}" + "".join(f"{t:>14}" for t in table))
        for i, (name, _) in enumerate(table["source-kinds"]):
            print(f"{name:<18}" + "".join(f"{rows[i][1]:>14.3f}" for rows in table.values()))
        return
    common = settings(args.quick, args.seed)
    prune_every = 10
    results = {}
    for label, method, extra in runs(args.sparsity, prune_every):
        reporter = MemoryReporter()
        start, cpu = time.perf_counter(), time.process_time()
        out = method.run(method.parse_config({**common, **extra}), reporter)
        acc = [(p.sim_time_s, p.value) for p in reporter.series("accuracy")]
        results[label] = {"final": out["final"], "accuracy": acc,
                          "wall_s": time.perf_counter() - start,
                          "cpu_s": time.process_time() - cpu}
        print(f"{label}: accuracy {out['final']['accuracy']:.3f}, sparsity "
              f"{out['final']['sparsity']:.2f}, emulated {out['sim_time_s']:.2f} s, wall "
              f"{results[label]['wall_s']:.1f} s, CPU {results[label]['cpu_s']:.1f} s", flush=True)
    equal = [k for k in results if k != "fedlora (unpruned)"]
    target = min(max(a for _, a in results[k]["accuracy"]) for k in equal)
    tta = {k: time_to(results[k]["accuracy"], target) for k in results}
    if args.json:
        args.json.write_text(json.dumps({"settings": common, "target": target, "tta": tta,
                                         "results": results}, indent=1))

    mine = tta["fedspine"]
    print(f"\nFedSpine vs baselines, {common['workers']} clients of jetson80, "
          f"{common['rounds']} rounds x {common['local_steps']} local steps, Dirichlet(0.5), "
          f"target sparsity {args.sparsity}; time-to-accuracy target {target:.3f}")
    header = (f"{'method':<22}{'sparsity':>9}{'final acc':>10}{'best acc':>9}{'TTA s':>8}"
              f"{'speedup':>9}{'d acc':>7}{'sim s':>8}{'infer ms':>9}{'params':>8}"
              f"{'traffic MB':>11}{'mem MB':>8}")
    print(header)
    print("-" * len(header))
    for k, r in results.items():
        f = r["final"]
        t = tta[k]
        speed = (t / mine) if (t is not None and mine) else None
        print(f"{k:<22}{f['sparsity']:>9.2f}{f['accuracy']:>10.3f}"
              f"{max(a for _, a in r['accuracy']):>9.3f}"
              f"{(f'{t:.2f}' if t is not None else 'never'):>8}"
              f"{(f'{speed:.2f}x' if speed is not None and k != 'fedspine' else '-'):>9}"
              f"{(100 * (results['fedspine']['final']['accuracy'] - f['accuracy'])):>+7.1f}"
              f"{f['sim_time_s']:>8.2f}{f['inference_latency_ms']:>9.4f}{f['params']:>8.0f}"
              f"{f['traffic_bytes'] / 1e6:>11.2f}{f['memory_bytes'] / 1e6:>8.2f}")
    print("speedup = baseline TTA / FedSpine TTA; d acc = FedSpine final accuracy minus the "
          "method's, in points (paper: 1.4x-6.9x, +0.4 to +4.5); CPU "
          f"{sum(r['cpu_s'] for r in results.values()):.0f} s for the five runs")


if __name__ == "__main__":
    main()
