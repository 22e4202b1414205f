"""HAT against the U-shaped split, device-cloud SD and cloud-only: TTFT and TBT over RTT, uplink,
device type, number of devices and cloud congestion, on the reproduction harness.

The reproduction is declared in :mod:`ml.reproduction.hat` before any run: the claims (TTFT
and TBT at least 41% lower than each baseline: paired ratio baseline / HAT >= 1.69), the four
methods on the same prompts (the seed draws them), 5 seeds, and the regimes (one factor at a
time around 10 mixed Jetsons at RTT 50 ms: RTT 10/100 ms, uplink 10/100 Mbit/s, 10 TX2 / NX /
AGX Orin, 1 and 30 devices, 30 devices on a cloud left with 25% and 10% of its capacity).

    python bench/reproduce_hat.py [--quick] [--regimes mixed-10 ...] [--seeds N ...]
                                  [--jobs N] [--resume] [--threads N] [--declaration v1|v2]

``--declaration`` (default v2, :mod:`ml.reproduction.hat_v2`): v2 serves ``hat-12-cpython``
(12 blocks of width 64, BPE 2,048 on the cpython corpus, 320-token context, 1,000 steps; about
7.5 CPU-minutes to pre-train once) with SD's 2-block draft trained for as many steps, into
docs/reproductions/hat_v2.json; its regimes run in priority order (headline, 10 AGX Orin, 30
devices on a cloud at 10%, ...), so a stopped sweep keeps the most informative ones and
``--resume`` continues it. v1 (:mod:`ml.reproduction.hat`, superseded: its served model was
worse than SD's draft; kept for ``--resume`` of its results) serves ``hat-12`` (width 32, BPE
512 on pydoc, 300 steps) into docs/reproductions/hat.json.

Full mode: the declaration's served LM (pre-trained, its adapter distilled and SD's draft LM
trained once, cached under $ESTUARY_DATA_DIR/models), 256-token prompts, 32 new tokens, the
clock charging a Llama-2-7B shape with each part at the served LM's share of its depth; with
the effect and latency plots, and regenerates docs/reproductions.md. ``--quick``: the 12-block ``deep-tiny`` LM, 40-token prompts,
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

from ml.reproduction import harness, hat, hat_v2, report  # noqa: E402
from ml.reproduction.bench import parser, run_bench  # noqa: E402

#: Each declaration with the settings of its full mode.
DECLARATIONS = {"v1": (hat.DECLARATION, hat.FULL), "v2": (hat_v2.DECLARATION, hat_v2.FULL_V2)}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--checkpoint", help="local Hugging Face Llama folder to serve")
    p.add_argument("--draft-checkpoint", help="its draft LM for device-cloud SD")
    p.add_argument("--declaration", choices=sorted(DECLARATIONS), default="v2",
                   help="which declaration to run (v1 is superseded; kept to resume it)")
    args = p.parse_args()
    declaration, settings = DECLARATIONS[args.declaration]
    if args.checkpoint:
        settings = {**settings, "lm_size": None, "served_model": "pretrained",
                    "checkpoint": args.checkpoint, "draft_checkpoint": args.draft_checkpoint}
        args.out = args.out or Path("var/reproductions/checkpoint")
    doc = run_bench(declaration, hat.run_arm, args,
                    context={"settings": settings, "threads": args.threads},
                    quick_context={"settings": hat.QUICK, "threads": args.threads},
                    quick_regime=hat.QUICK_REGIME, quick_seeds=hat.QUICK_SEEDS,
                    metrics=hat.REPORT_METRICS, describe=hat.describe)
    # The latency plot beside the harness's effect plot (no accuracy curves here); saved into
    # the same results file and docs without printing anything after the table.
    folder = args.out or (Path("var/reproductions") if args.quick
                          else harness.default_results_dir())
    name = hat.plot_latencies(doc, folder / f"{declaration.key}-latency.png")
    if name and name not in doc["plots"]:
        doc["plots"].append(name)
        harness.save(doc, folder / f"{declaration.key}.json")
        if not args.quick and folder == harness.default_results_dir():
            report.write_markdown(folder, folder.parent / "reproductions.md")


if __name__ == "__main__":
    main()
