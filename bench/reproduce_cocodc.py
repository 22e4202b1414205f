"""CoCoDC against Streaming DiLoCo: steps to a declared perplexity target, trained from scratch
across four emulated regions, on the reproduction harness.

The reproduction is declared in :mod:`ml.reproduction.cocodc` before any run: the claim (up to
21% fewer steps than Streaming DiLoCo to the same perplexity, arXiv 2504.17672), judged at equal
traffic (CoCoDC with N = P sends per H, the primary comparison) and with N from the link (the
paper's Adaptive Transmission, secondary); an 8-block decoder with a 1,024-token BPE trained from
scratch on the offline ``cpython`` corpus, H = 16, 30 outer rounds; two perplexity targets fixed
in advance; 5 paired seeds; the regimes: the WAN's bandwidth and latency, which set the overlap
τ and the free N.

    python bench/reproduce_cocodc.py [--quick] [--regimes wan-10g-100ms ...] [--seeds N ...]
                                     [--jobs N] [--resume] [--threads N]

Full mode: 4 regimes x 3 arms x 5 seeds = 60 runs of 480 steps into docs/reproductions/
cocodc.json with the plots, and regenerates docs/reproductions.md. ``--quick``: the headline
regime, seeds 0 and 1, 80 steps, into var/reproductions/. Both print the verdict table last.
The first call trains the BPE and tokenizes the corpus (cached under $ESTUARY_DATA_DIR, about
15 s).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.reproduction import cocodc  # noqa: E402
from ml.reproduction.bench import parser, run_bench  # noqa: E402


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    args = p.parse_args()
    full_targets = {"perplexity": cocodc.TARGET_PPL, "mid_perplexity": cocodc.MID_TARGET_PPL}
    run_bench(cocodc.DECLARATION, cocodc.run_arm, args,
              context={"settings": cocodc.FULL, "targets": full_targets,
                       "threads": args.threads},
              quick_context={"settings": cocodc.QUICK, "targets": cocodc.QUICK_TARGETS,
                             "threads": args.threads},
              quick_regime=cocodc.QUICK_REGIME, quick_seeds=cocodc.QUICK_SEEDS,
              metrics=cocodc.REPORT_METRICS, describe=cocodc.describe)


if __name__ == "__main__":
    main()
