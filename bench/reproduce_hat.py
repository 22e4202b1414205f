"""HAT against its baselines: TTFT and TBT at 1, 10 and 30 devices, prompts of 128 to 2,048 tokens.

Every device of the ``jetson30-a6000`` preset (10 TX2, 10 NX, 10 AGX Orin; ``workers`` of them,
stratified) sends one request at time 0 to the 8×A6000 server; the cloud batches everyone's
requests (docs/methods/hat.md). The real passes run on the small pre-trained byte-level LM,
extended to 2,048-byte windows (``extend_steps``, ``context_tokens``; ml.models.long_context), and
decide every token (greedy, so all four methods emit the same tokens); the clock charges the
passes of a Llama-2-7B-shaped model in fp16 (``served_model``), and device-cloud SD's draft as a
68M-parameter Llama. TTFT and TBT are means over the devices.

    python bench/reproduce_hat.py [--quick] [--devices 1 10 30] [--prompts 128 512 2048]
                                  [--extend-steps N] [--context N] [--requests N]
                                  [--checkpoint FOLDER --draft-checkpoint FOLDER]

Every row serves at least ``--requests`` (10) requests: with fewer devices the row is run again
with seeds 1, 2, ... (each seed draws other prompts) and averaged, so a 1-device row is ten
prompts, not one. ``--quick``: 1 and 4 devices, prompts of 128 and 512 tokens, 16 new tokens
(about a minute once the models are cached). Each row is printed as it finishes; the table is printed last.
``--extend-steps 0`` serves the LM pre-trained on 128-byte windows as is (the earlier setup).
``--checkpoint`` serves a local Hugging Face Llama folder instead, and the clock then charges
its own shape (``served_model=pretrained``); ``--draft-checkpoint`` is device-cloud SD's draft.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ml import registry  # noqa: E402
from ml.cli import format_table  # noqa: E402
from ml.reporting import MemoryReporter  # noqa: E402

METHODS = ("hat", "u-shaped-inference", "device-cloud-sd", "cloud-only-inference")
SHORT = {"hat": "hat", "u-shaped-inference": "u-split", "device-cloud-sd": "sd-tokens",
         "cloud-only-inference": "cloud"}
CLAIM = ("Paper (arXiv 2503.18989; 30 Jetsons + 8x A6000): HAT cuts TTFT by 41-54% and TBT by "
         "41-77% against its baselines (which baselines, models and prompts: not found).")


FIGURES = ("ttft_ms", "tbt_ms", "acceptance_rate", "tokens_per_round",
           "uplink_bytes_per_token", "downlink_bytes_per_token")


def run(method: str, config: dict, seeds: range) -> dict:
    """The method's figures, averaged over one run per seed (each seed draws other prompts)."""
    entry = registry.get(method)
    known = {k: v for k, v in config.items() if k in entry.config.model_fields}
    finals = [entry.run(entry.parse_config({**known, "seed": seed}), MemoryReporter())["final"]
              for seed in seeds]
    return {k: sum(f[k] for f in finals) / len(finals) for k in FIGURES if k in finals[0]}


def change(new: float, old: float) -> str:
    return f"{100 * (new - old) / old:+.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--devices", type=int, nargs="+")
    parser.add_argument("--prompts", type=int, nargs="+")
    parser.add_argument("--new-tokens", type=int)
    parser.add_argument("--extend-steps", type=int, help="long-context extension steps")
    parser.add_argument("--context", type=int, help="long-context extension window")
    parser.add_argument("--checkpoint", help="local Hugging Face Llama folder to serve")
    parser.add_argument("--draft-checkpoint", help="its draft LM for device-cloud SD")
    parser.add_argument("--requests", type=int, default=10,
                        help="at least this many requests per row: fewer devices than this "
                             "are run again with other seeds (other prompts) and averaged")
    args = parser.parse_args()
    torch.set_num_threads(1)
    devices = args.devices or ([1, 4] if args.quick else [1, 10, 30])
    prompts = args.prompts or ([128, 512] if args.quick else [128, 512, 2048])
    new_tokens = args.new_tokens or (16 if args.quick else 32)
    start = time.perf_counter()
    rows, info = [], {}
    for n in devices:
        for prompt in prompts:
            config = {"workers": n, "prompt_tokens": prompt, "new_tokens": new_tokens,
                      "testbed": "jetson30-a6000", "temperature": 0.0}
            if args.extend_steps is not None:
                config["extend_steps"] = args.extend_steps
            if args.context is not None:
                config["context_tokens"] = args.context
            if args.checkpoint:
                config.update(checkpoint=args.checkpoint, draft_checkpoint=args.draft_checkpoint,
                              served_model="pretrained")
            seeds = range(-(-args.requests // n))
            results = {m: run(m, config, seeds) for m in METHODS}
            hat = results["hat"]
            print(f"devices={n} prompt={prompt} runs={len(seeds)}: " + ", ".join(
                f"{SHORT[m]} ttft={r['ttft_ms']:.0f}ms tbt={r['tbt_ms']:.1f}ms"
                for m, r in results.items())
                + f"; hat accept={hat['acceptance_rate']:.2f}"
                f" tok/round={hat['tokens_per_round']:.2f}"
                f" sd accept={results['device-cloud-sd']['acceptance_rate']:.2f}"
                f" ({time.perf_counter() - start:.0f} s)", flush=True)
            info = hat
            row = [n, prompt]
            for m in METHODS:
                row += [f"{results[m]['ttft_ms']:.0f}", f"{results[m]['tbt_ms']:.1f}"]
            row += [change(hat["ttft_ms"], results["u-shaped-inference"]["ttft_ms"]),
                    change(hat["tbt_ms"], results["u-shaped-inference"]["tbt_ms"]),
                    change(hat["ttft_ms"], results["device-cloud-sd"]["ttft_ms"]),
                    change(hat["tbt_ms"], results["device-cloud-sd"]["tbt_ms"]),
                    f"{hat['acceptance_rate']:.2f}", f"{hat['tokens_per_round']:.2f}",
                    f"{results['device-cloud-sd']['acceptance_rate']:.2f}"]
            rows.append(row)
    headers = ["devices", "prompt"]
    for m in METHODS:
        headers += [f"{SHORT[m]} TTFT ms", f"{SHORT[m]} TBT ms"]
    headers += ["HAT dTTFT vs u-split", "dTBT vs u-split", "dTTFT vs sd", "dTBT vs sd",
                "accept", "tok/round", "sd accept"]
    print(f"\nwall time {time.perf_counter() - start:.0f} s; {new_tokens} new tokens per request; "
          f"at least {args.requests} requests per row (seeds 0.. for fewer devices); "
          f"last HAT run: uplink {info.get('uplink_bytes_per_token', 0):.0f} B/token, "
          f"downlink {info.get('downlink_bytes_per_token', 0):.0f} B/token")
    print(CLAIM)
    print(format_table(headers, rows))


if __name__ == "__main__":
    main()
