"""FedSpine against FedLoRA, HetLoRA and prune-then-fine-tune at equal sparsity: time to a
declared accuracy and final accuracy over the links' rate, on the reproduction harness.

The reproduction is declared in :mod:`ml.reproduction.fedspine` before any run: the claims
(1.4-6.9x faster fine-tuning and +0.4 to +4.5 points at equal sparsity, arXiv 2501.02438, each
against each baseline), three Jetson clients for 50 rounds at sparsity 0.5 (FedSpine sparse by
round 25 at the latest), a target accuracy fixed from a pilot on seed 100, 5 paired seeds, and
the regimes: every link at a tenth of the catalogue rate (where the LoRA rank changes a client's
completion time; headline) and the catalogue links.

    python bench/reproduce_fedspine.py [--quick] [--regimes links-0.1 ...] [--seeds N ...]
                                       [--jobs N] [--resume] [--threads N]
    python bench/reproduce_fedspine.py --central   # the task's central references

Full mode: 2 regimes x 4 arms x 5 seeds = 40 runs (about 70 CPU-s each on one thread) into
docs/reproductions/fedspine.json with the plots, and regenerates docs/reproductions.md.
``--quick``: the headline regime, seeds 0 and 1, 5 rounds of 6 iterations, into
var/reproductions/. Both print the verdict table last. The first call pre-trains the ``small``
base (cached under $ESTUARY_DATA_DIR, about 20 s).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.reproduction import fedspine  # noqa: E402
from ml.reproduction.bench import parser, run_bench  # noqa: E402


def central(task: str, steps: int = 300, seed: int = 0) -> list[tuple[str, float]]:
    """Central references on ``task``: majority class, a head-only probe on the frozen base and
    LoRA (rank 8, every projection) + head, ``steps`` AdamW steps of batch 16 at lr 3e-3."""
    from torch.nn import functional as F

    from ml.algorithms.federated_fine_tuning.structure import LORA_TARGETS
    from ml.algorithms.federated_fine_tuning.task import (TopicClassifier, load_base,
                                                          load_topic_data)
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


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--central", action="store_true",
                   help="only the central references of the downstream tasks")
    args = p.parse_args()
    if args.central:
        torch.set_num_threads(args.threads)
        seed = (args.seeds or [0])[0]
        table = {task: central(task, seed=seed) for task in ("source-kinds", "pydoc-topics")}
        print(f"\ncentral references, small base, 300 steps, 600 test windows (seed {seed})")
        print(f"{'reference':<18}" + "".join(f"{t:>14}" for t in table))
        for i, (name, _) in enumerate(table["source-kinds"]):
            print(f"{name:<18}" + "".join(f"{rows[i][1]:>14.3f}" for rows in table.values()))
        return
    run_bench(fedspine.DECLARATION, fedspine.run_arm, args,
              context={"settings": fedspine.FULL, "accuracy": fedspine.TARGET_ACCURACY,
                       "threads": args.threads},
              quick_context={"settings": fedspine.QUICK, "accuracy": fedspine.QUICK_TARGET,
                             "overrides": fedspine.QUICK_OVERRIDES, "threads": args.threads},
              quick_regime=fedspine.QUICK_REGIME, quick_seeds=fedspine.QUICK_SEEDS,
              metrics=fedspine.REPORT_METRICS, describe=fedspine.describe,
              quick_note="Quick run: 5 rounds of 6 iterations (FedSpine sparse by round 2), 60 "
                         "test windows and a smoke-check target of 0.4; not the declared "
                         "setting.", quick_jobs=2)


if __name__ == "__main__":
    main()
