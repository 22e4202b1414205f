"""IMB-NAS: which adaptation of a balanced supernet to a long-tailed target works best, and does
balanced accuracy predict long-tailed accuracy? On the reproduction harness.

The reproduction is declared in :mod:`ml.reproduction.imbnas` before any run: the four
strategies (``imb-nas`` = frozen backbone + re-weighted head retraining; fine-tuning with
cross-entropy; fine-tuning re-weighted; full search on the target) and the Kendall-tau ranking
of 30 fixed subnets; 10 seeds; imbalance ratio 10, 50 and 100 on digits and MNIST-5000, and
CIFAR-10 (500 images per class, rho 100) when ``--data-root`` holds it.

    python bench/reproduce_imbnas.py [--quick] [--regimes KEY ...] [--seeds N ...] [--jobs N]
                                     [--resume] [--data-root FOLDER]

``--quick``: digits, rho 100, seeds 0 and 1 (about a minute), into var/reproductions/. Full
mode: every regime and seed into docs/reproductions/imbnas.json with plots, and regenerates
docs/reproductions.md. Both print the verdict table last.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.reproduction import imbnas  # noqa: E402
from ml.reproduction.bench import parser, run_bench  # noqa: E402


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py (the CIFAR regime)")
    args = p.parse_args()
    skip = {}
    if not imbnas.cifar_available(args.data_root):
        skip["cifar10-100"] = ("no CIFAR-10 folder given (--data-root FOLDER with "
                               "cifar-10-batches-py inside)")
    run_bench(imbnas.DECLARATION, imbnas.run_arm, args, skip=skip,
              context={"data_root": args.data_root}, quick_context={},
              quick_regime=imbnas.QUICK_REGIME, quick_seeds=imbnas.QUICK_SEEDS,
              metrics=imbnas.TARGET["report_metrics"])


if __name__ == "__main__":
    main()
