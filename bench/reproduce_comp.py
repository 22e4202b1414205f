"""COMP against LLM-Pruner (and three more baselines) at 10%, 20% and 30% pruning of a 12-block
decoder LM, on the reproduction harness.

The reproduction is declared in :mod:`ml.reproduction.comp` before any run: the claims (COMP
+6.13 accuracy points over LLM-Pruner at 20%; 80% less peak pruning memory), the five pruning
jobs on the same pre-trained model, calibration set and evaluation, 5 seeds, and the regimes
(pruning ratio 10/20/30%).

    python bench/reproduce_comp.py [--quick] [--regimes ratio-20 ...] [--seeds N ...]
                                   [--jobs N] [--resume] [--threads N]

Full mode: the ``medium`` LM (12 blocks, ~11.7 M parameters, BPE on the offline ``cpython``
corpus), pre-trained once and cached under $ESTUARY_DATA_DIR/models (``python -m ml pretrain
--size medium`` runs that step alone, resumably); 1,200 questions; into
docs/reproductions/comp.json with the effect plot, and regenerates docs/reproductions.md.
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
    args = p.parse_args()
    run_bench(comp.DECLARATION, comp.run_arm, args,
              context={"settings": comp.FULL, "threads": args.threads},
              quick_context={"settings": comp.QUICK, "threads": args.threads},
              quick_regime=comp.QUICK_REGIME, quick_seeds=comp.QUICK_SEEDS,
              metrics=comp.REPORT_METRICS, describe=comp.describe)


if __name__ == "__main__":
    main()
