"""COMP against LLM-Pruner (and three more baselines) at 10%, 20% and 30% pruning of a 12-block
decoder LM, on the reproduction harness.

The reproduction is declared in :mod:`ml.reproduction.comp` before any run: the claims (COMP
+6.13 accuracy points over LLM-Pruner at 20%; 80% less peak pruning memory), the five pruning
jobs on the same pre-trained model, calibration set and evaluation, 5 seeds, and the regimes
(pruning ratio 10/20/30%).

    python bench/reproduce_comp.py [--quick] [--setting deep-small|medium] [--regimes ...]
                                   [--seeds N ...] [--jobs N] [--resume] [--threads N]

Full mode, ``--setting deep-small`` (the default, sized for one CPU core): the 12-block
``deep-small`` LM (~0.87 M parameters, BPE 2,048 on the offline ``cpython`` corpus, about 6
CPU-minutes of pre-training), 1,200 questions, into docs/reproductions/comp-deep-small.json;
the 75 runs take about 40 CPU-minutes. ``--setting medium``: the ``medium`` LM (12 blocks,
~11.7 M parameters, BPE 4,096; pre-training takes 3.8-5 h of one core, minutes on a GPU:
``python -m ml pretrain --size medium`` runs that step alone, resumably) into
docs/reproductions/comp.json. Models are cached under $ESTUARY_DATA_DIR/models. Both write
the effect plot and regenerate docs/reproductions.md.
``--quick``: the 12-block ``deep-tiny`` LM (pydoc, ~0.2 M parameters), 20% only, seeds 0 and 1,
into var/reproductions/. Both print the verdict table last.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.reproduction import comp  # noqa: E402
from ml.reproduction.bench import parser, run_bench  # noqa: E402


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--setting", choices=sorted(comp.SETTINGS), default=comp.DEFAULT_SETTING,
                   help="full mode's model and declaration (default %(default)s)")
    args = p.parse_args()
    declaration, settings = comp.SETTINGS[args.setting]
    run_bench(declaration, comp.run_arm, args,
              context={"settings": settings, "threads": args.threads},
              quick_context={"settings": comp.QUICK, "threads": args.threads},
              quick_regime=comp.QUICK_REGIME, quick_seeds=comp.QUICK_SEEDS,
              metrics=comp.REPORT_METRICS, describe=comp.describe)


if __name__ == "__main__":
    main()
