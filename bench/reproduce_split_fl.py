"""MergeSFL and ParallelSFL against their split-FL baselines, on the reproduction harness.

The reproduction is declared in :mod:`ml.reproduction.split_fl` before any run: five arms
(FedAvg, SplitFed, AdaSFL, MergeSFL with GA selection of half the workers, ParallelSFL with the
fastest device of each cluster as its top worker) on MNIST-5000 at 28x28 with the group's EMNIST
CNN over workers of ``jetson80``; the papers' claims (accuracy, speed-up, traffic) as paired
comparisons with their lower bounds; 5 seeds; the regimes (pathological non-IID with 1-2 classes
per worker, label-pattern, Dirichlet; 20/40/80 workers; the server link at 50, 100, 1000
Mbit/s; an earlier cut; CIFAR-10 with a ResNet when ``--data-root`` holds it).

    python bench/reproduce_split_fl.py [--quick] [--regimes KEY ...] [--seeds N ...]
                                       [--jobs N] [--resume] [--data-root FOLDER]
                                       [--declaration v1|v2|v2-regimes]

``--declaration`` (default v2, :mod:`ml.reproduction.split_fl_v2`): v2 re-runs the headline,
early-cut, 40- and 80-worker regimes with seeds 20-24, MergeSFL's and ParallelSFL's merged top
steps at lr (the authors' rule) and a budget of 1 s of emulated time per worker, into
docs/reproductions/split_fl_v2.json. ``v2-regimes`` (:mod:`ml.reproduction.split_fl_v2_regimes`)
runs v1's six other regimes (50 Mbit/s and 1 Gbit/s links, Dirichlet, equal participation,
label-pattern, pathological 1 class) under v2's rules, into split_fl_v2_regimes.json. v1
(:mod:`ml.reproduction.split_fl`, superseded, kept for ``--resume`` of its results) is
described below.

``--quick``: the headline regime with ``cnn-small``, seeds 0 and 1, a 5 s budget and target
0.3, two runs at once (about a minute on this shared 2-core machine), into var/reproductions/;
a check that the bench works, not a measurement. Full mode: every regime, 5 seeds, a 20 s
budget (12 s at 1 Gbit/s, 40 s at 50 Mbit/s), target 0.7, into docs/reproductions/split_fl.json
with plots, and regenerates docs/reproductions.md; ``--regimes`` runs a subset, ``--resume``
continues a stopped sweep. See docs/reproductions.md for the measured wall times.

Cost (profiled on one headline run per arm): the EMNIST CNN's forward and backward passes are
70-80% of a run, the per-round test-set evaluation (1,000 images) 12-17%, setup, the emulator
and MergeSFL's genetic selection a few percent. Runs used to train one more round than the
budget holds, only to drop it (a fifth to a half of a run); they now stop before it. A headline
seed of all five arms then costs about 64 CPU-seconds (5.3 CPU-minutes per regime of 5 seeds):
about 3 minutes per regime with ``--jobs 2`` on 2 idle cores, 30-45 minutes for the ten
regimes that run without CIFAR-10 (the 50 Mbit/s regime's 40 s budget costs double). On this
machine shared under ``nice -n 19`` a run takes 5-8 times its CPU time, so the full sweep
takes hours there; ``--regimes`` and ``--resume`` run it in parts.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.reproduction import split_fl, split_fl_v2, split_fl_v2_regimes  # noqa: E402
from ml.reproduction.bench import parser, run_bench  # noqa: E402

DECLARATIONS = {"v1": split_fl.DECLARATION, "v2": split_fl_v2.DECLARATION,
                "v2-regimes": split_fl_v2_regimes.DECLARATION}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py (the ResNet regime)")
    p.add_argument("--declaration", choices=sorted(DECLARATIONS), default="v2",
                   help="which declaration to run (v1 is superseded; kept to resume it)")
    args = p.parse_args()
    declaration = DECLARATIONS[args.declaration]
    skip = {}
    if not split_fl.cifar_available(args.data_root) and any(
            r.key == "cifar10-resnet" for r in declaration.regimes):
        skip["cifar10-resnet"] = ("no CIFAR-10 folder given (--data-root FOLDER with "
                                  "cifar-10-batches-py inside)")
    target = declaration.target
    run_bench(declaration, split_fl.run_arm, args,
              context={"accuracy": target["accuracy"], "budget_s": target["budget_s"],
                       "data_root": args.data_root},
              quick_regime=split_fl.QUICK_REGIME, quick_seeds=split_fl.QUICK_SEEDS,
              quick_context={"accuracy": split_fl.QUICK_TARGET["accuracy"],
                             "budget_s": split_fl.QUICK_TARGET["budget_s"],
                             "overrides": split_fl.QUICK_OVERRIDES},
              quick_note=split_fl.QUICK_NOTE, quick_jobs=2,
              skip=skip, metrics=target["report_metrics"])


if __name__ == "__main__":
    main()
