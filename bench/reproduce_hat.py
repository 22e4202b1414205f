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

``--checkpoint FOLDER --draft-checkpoint FOLDER`` serves a local Hugging Face Llama folder
instead of ``hat-12`` (the clock then charges its own shape, ``served_model=pretrained``), into
var/reproductions/checkpoint/ unless ``--out`` says otherwise: the committed results stay ours.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.reproduction import harness, hat, report  # noqa: E402
from ml.reproduction.bench import parser, run_bench  # noqa: E402


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--checkpoint", help="local Hugging Face Llama folder to serve")
    p.add_argument("--draft-checkpoint", help="its draft LM for device-cloud SD")
    args = p.parse_args()
    settings = hat.FULL
    if args.checkpoint:
        settings = {**hat.FULL, "lm_size": None, "served_model": "pretrained",
                    "checkpoint": args.checkpoint, "draft_checkpoint": args.draft_checkpoint}
        args.out = args.out or Path("var/reproductions/checkpoint")
    doc = run_bench(hat.DECLARATION, hat.run_arm, args,
                    context={"settings": settings, "threads": args.threads},
                    quick_context={"settings": hat.QUICK, "threads": args.threads},
                    quick_regime=hat.QUICK_REGIME, quick_seeds=hat.QUICK_SEEDS,
                    metrics=hat.REPORT_METRICS, describe=hat.describe)
    # The latency plot beside the harness's effect plot (no accuracy curves here); saved into
    # the same results file and docs without printing anything after the table.
    folder = args.out or (Path("var/reproductions") if args.quick
                          else harness.default_results_dir())
    name = hat.plot_latencies(doc, folder / "hat-latency.png")
    if name and name not in doc["plots"]:
        doc["plots"].append(name)
        harness.save(doc, folder / f"{hat.DECLARATION.key}.json")
        if not args.quick and folder == harness.default_results_dir():
            report.write_markdown(folder, folder.parent / "reproductions.md")


if __name__ == "__main__":
    main()
