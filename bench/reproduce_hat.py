"""HAT against the U-shaped split, device-cloud SD and cloud-only: TTFT and TBT over RTT, uplink,
device type, number of devices and cloud congestion, on the reproduction harness.

The reproduction is declared in :mod:`ml.reproduction.hat` before any run: the claims (TTFT
and TBT at least 41% lower than each baseline: paired ratio baseline / HAT >= 1.69), the four
methods on the same prompts (the seed draws them), 5 seeds, and the regimes (one factor at a
time around 10 mixed Jetsons at RTT 50 ms: RTT 10/100 ms, uplink 10/100 Mbit/s, 10 TX2 / NX /
AGX Orin, 1 and 30 devices, 30 devices on a cloud left with 25% and 10% of its capacity).

    python bench/reproduce_hat.py [--quick] [--regimes mixed-10 ...] [--seeds N ...]
                                  [--jobs N] [--resume] [--threads N]

Full mode: the 12-block ``hat-12`` LM (BPE on pydoc, 320-token context; pre-trained, its
adapter distilled and SD's draft LM trained once, cached under $ESTUARY_DATA_DIR/models),
256-token prompts, 32 new tokens, the clock charging a Llama-2-7B shape with each part at the
served LM's share of its depth; into docs/reproductions/hat.json with the effect plot, and
regenerates docs/reproductions.md. ``--quick``: the 12-block ``deep-tiny`` LM, 40-token prompts,
12 new tokens, the headline regime, seeds 0 and 1, into var/reproductions/. Both
print the verdict table last.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.reproduction import hat  # noqa: E402
from ml.reproduction.bench import parser, run_bench  # noqa: E402


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    args = p.parse_args()
    run_bench(hat.DECLARATION, hat.run_arm, args,
              context={"settings": hat.FULL, "threads": args.threads},
              quick_context={"settings": hat.QUICK, "threads": args.threads},
              quick_regime=hat.QUICK_REGIME, quick_seeds=hat.QUICK_SEEDS,
              metrics=hat.REPORT_METRICS, describe=hat.describe)


if __name__ == "__main__":
    main()
