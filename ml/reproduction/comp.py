"""The COMP reproduction (arXiv 2501.15255): hybrid-granularity pruning against LLM-Pruner.

Two declarations with the same claims, arms, regimes and seeds, one results file each:
:data:`DECLARATION_CPU` (``comp-deep-small``, the bench's default: the 12-block ``deep-small``
LM, sized for one CPU core) and :data:`DECLARATION` (``comp``, ``--setting medium``: the
11.6 M-parameter ``medium`` LM, for a GPU or hours of CPU). The second is described here:

Declared here, before any run: the five pruning jobs of the catalogue (``comp``, ``llm-pruner``,
``llm-pruner-lora``, ``wanda-channel``, ``layer-prune``) prune the same pre-trained 12-block
decoder (``medium`` of :mod:`ml.models.pretraining`: BPE on the offline ``cpython`` corpus, one
block is about 7% of the parameters, so COMP's coarse step can remove whole blocks) with the
same calibration set, budget and evaluation; 5 seeds (the seed draws the calibration windows
and the question set; the model is the same fixed checkpoint for every seed, as the paper
prunes one Llama); the regimes: pruning ratio 10%, 20% (the paper's headline) and 30%.

The question set (ours, standing in for the zero-shot suites): 1,200 next-word multiple-choice
questions from the held-out documents (4 candidates with the same token count, distractors drawn
by frequency from the training split; chance 25%; ml.eval.lm with the leading space attached to
the word as the BPE tokenizes it).

Peak pruning memory is measured the same way for every method (ml.algorithms.llm_compression.
memory): the bytes of the weights resident on the measuring device when pruning starts plus the
peak of torch allocations during pruning beyond that. On CUDA COMP keeps the model on the CPU
and moves one block at a time, LLM-Pruner needs the whole model on the GPU for its backward
pass; on the CPU both hold all weights in the same memory, so only the working memory differs.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from ml import registry
from ml.reproduction.declaration import Arm, Claim, Comparison, Declaration, Regime
from ml.reporting import MemoryReporter

ARMS = (
    Arm("comp", "comp"),
    Arm("llm-pruner", "llm-pruner"),
    Arm("llm-pruner-lora", "llm-pruner-lora"),
    Arm("wanda-channel", "wanda-channel"),
    Arm("layer-prune", "layer-prune"),
)

#: "80% less memory overhead": LLM-Pruner's peak over COMP's at least 1 / (1 - 0.8) = 5x.
MEMORY_RATIO = 1 / (1 - 0.80)

CLAIMS = (
    Claim("comp-accuracy",
          "At 20% pruning COMP's average zero-shot accuracy is 6.13 points above LLM-Pruner's "
          "(both without recovery fine-tuning).",
          (Comparison("comp", "llm-pruner", "accuracy", "difference", "higher", 6.13, 100.0),)),
    Claim("comp-memory",
          "COMP needs 80% less memory than LLM-Pruner while pruning (peak pruning memory at "
          "least 5x lower).",
          (Comparison("comp", "llm-pruner", "prune_peak_memory_bytes", "ratio", "lower",
                      MEMORY_RATIO),)),
)

REGIMES = (
    Regime("ratio-20", "20% pruned", {"ratio": 0.2}),
    Regime("ratio-10", "10% pruned", {"ratio": 0.1}),
    Regime("ratio-30", "30% pruned", {"ratio": 0.3}),
)

#: The shared settings of the full mode (every arm, every regime).
FULL = {"model_size": "medium", "seq_len": 256, "calibration_size": 32, "batch_size": 8,
        "eval_windows": 100, "task_items": 1200, "task_choices": 4, "latency_repeats": 5,
        "recovery_steps": 60}
#: ``--quick``: the 12-block ``deep-tiny`` (pydoc, BPE 512), smaller sets.
QUICK = {"model_size": "deep-tiny", "seq_len": 64, "calibration_size": 8, "batch_size": 8,
         "eval_windows": 16, "task_items": 300, "task_choices": 4, "latency_repeats": 3,
         "recovery_steps": 20}

REPORT_METRICS = ["accuracy", "perplexity", "achieved_ratio", "removed_blocks",
                  "prune_peak_memory_bytes", "prune_work_memory_bytes", "prune_time_s"]

TARGET = {"report_metrics": REPORT_METRICS, "model_size": FULL["model_size"],
          "task_items": FULL["task_items"], "chance_accuracy": 1 / FULL["task_choices"]}

DECLARATION = Declaration(
    key="comp",
    paper="COMP (post-training structured pruning for on-device LLMs)",
    arxiv="2501.15255",
    setting="A 12-block Llama-style decoder (d_model 256, 4 heads, SwiGLU 704, BPE 4,096; "
            "~11.6 M parameters) pre-trained once on the offline cpython corpus (standard-"
            "library sources and pydoc topics, every tenth file held out), pruned by each "
            "method to 10/20/30% fewer parameters with 32 calibration windows of 256 tokens "
            "from the training split. Quality on held-out text: next-word multiple choice "
            "(1,200 questions, 4 candidates, chance 25%) and perplexity (100 windows). "
            "LLM-Pruner without recovery is the claim's baseline; LLM-Pruner with LoRA "
            "recovery (60 steps), Wanda-style channel pruning and ShortGPT-style layer "
            "removal are reported beside it.",
    claims=CLAIMS,
    arms=ARMS,
    regimes=REGIMES,
    headline="ratio-20",
    seeds=tuple(range(5)),
    target=TARGET,
    differences=(
        "Model: an 11.6 M-parameter 12-block decoder trained on ~2.7 M tokens of Python "
        "sources, not LLaMA-2-7B (32 blocks) trained on 2 T tokens.",
        "Accuracy: a next-word multiple-choice set built from held-out corpus files stands in "
        "for the seven zero-shot suites (BoolQ, PIQA, HellaSwag, ...).",
        "Memory: on a CPU run both methods hold all weights in host memory, so the comparison "
        "is of the working memory on top of the same resident weights; the paper measures GPU "
        "memory, where COMP moves one block at a time (this code does too on CUDA).",
        "The seed draws the calibration set and the question set; the pre-trained model is "
        "the same for every seed.",
    ),
    launch={"algorithm": "comp",
            "baselines": ["llm-pruner", "llm-pruner-lora", "wanda-channel", "layer-prune"],
            "config": {"ratio": 0.2, "model_size": "medium", "seq_len": 256,
                       "calibration_size": 32, "task_items": 1200}},
)

QUICK_REGIME = "ratio-20"
QUICK_SEEDS = (0, 1)

# -- the CPU setting (declared before its runs, as a separate results file) ----------------------

#: The bench's default full mode, sized for one CPU core: the 12-block ``deep-small`` LM
#: (cpython, BPE 2,048, d_model 64, ~0.87 M parameters, one block ~6% of them, pre-trained in
#: about 6 CPU-minutes), 128-token windows. ``medium`` (``--setting medium``, DECLARATION above)
#: needs 3.8-5 h of one core to pre-train and stays for a user with the time or a GPU.
DEEP_SMALL = {"model_size": "deep-small", "seq_len": 128, "calibration_size": 32,
              "batch_size": 8, "eval_windows": 100, "task_items": 1200, "task_choices": 4,
              "latency_repeats": 3, "recovery_steps": 30}

DECLARATION_CPU = dataclasses.replace(
    DECLARATION,
    key="comp-deep-small",
    setting="The CPU setting of this reproduction (the same claims, arms, regimes, seeds and "
            "verdict rule as the `medium` declaration, on a smaller model): a 12-block "
            "Llama-style decoder (d_model 64, 4 heads, SwiGLU 176, BPE 2,048; ~0.87 M "
            "parameters, one block ~5.8% of them, so 20% pruning is worth 3.4 blocks) "
            "pre-trained once for 1,000 steps of 16x128 tokens (~0.7 pass) on the offline "
            "cpython corpus (every tenth file held out), pruned by each method to 10/20/30% "
            "fewer parameters with 32 calibration windows of 128 tokens from the training "
            "split. Quality on held-out files: next-word multiple choice (1,200 questions, 4 "
            "candidates of equal token count, chance 25%) and perplexity (100 windows). "
            "LLM-Pruner without recovery is the claim's baseline; LLM-Pruner with LoRA "
            "recovery (30 steps), Wanda-style channel pruning and ShortGPT-style layer removal "
            "are reported beside it. Runs: one process, one torch thread, nice 19, on a shared "
            "2-core CPU.",
    target={**TARGET, "model_size": DEEP_SMALL["model_size"],
            "task_items": DEEP_SMALL["task_items"]},
    differences=(
        "Model: a 0.87 M-parameter 12-block decoder trained on ~2 M tokens of Python sources "
        "and pydoc text, not LLaMA-2-7B (32 blocks, 2 T tokens); chosen so pre-training "
        "(~6 CPU-minutes) and the 75-run sweep fit one CPU core; the `medium` declaration "
        "(11.6 M parameters) is the larger setting for a GPU or a day of CPU.",
        *DECLARATION.differences[1:],
    ),
    launch={**DECLARATION.launch,
            "config": {"ratio": 0.2, "model_size": "deep-small", "seq_len": 128,
                       "calibration_size": 32, "task_items": 1200}},
)

#: ``--setting`` of the bench: which declaration and shared settings its full mode runs.
SETTINGS = {"deep-small": (DECLARATION_CPU, DEEP_SMALL), "medium": (DECLARATION, FULL)}
DEFAULT_SETTING = "deep-small"


def run_arm(regime: Regime, arm: Arm, seed: int, context: dict) -> dict:
    """Prune with ``arm``'s method at ``regime``'s ratio with ``seed``; return its record."""
    torch.set_num_threads(context.get("threads", 1))
    method = registry.get(arm.method)
    known = method.config.model_fields
    values = {k: v for k, v in {**context["settings"], **regime.settings, **arm.overrides,
                                "seed": seed}.items() if k in known}
    start, cpu = time.perf_counter(), time.process_time()
    result = method.run(method.parse_config(values), MemoryReporter())
    final = result["final"]
    details = result.get("details", {})
    removed = details.get("removed_blocks")
    return {"regime": regime.key, "arm": arm.label, "seed": seed,
            "metrics": {"accuracy": final["accuracy"], "perplexity": final["perplexity"],
                        "achieved_ratio": final["achieved_ratio"],
                        "removed_blocks": float(len(removed)) if removed is not None else None,
                        "prune_peak_memory_bytes": final["prune_peak_memory_bytes"],
                        "prune_work_memory_bytes": final["prune_work_memory_bytes"],
                        "prune_time_s": final["prune_time_s"],
                        "latency_ms": final["latency_ms"],
                        "dense_accuracy": final["dense_accuracy"],
                        "dense_perplexity": final["dense_perplexity"]},
            "censored": [], "curve": {},
            "model": {"size": values.get("model_size"), "params": final["dense_params"],
                      "blocks_after_pruning": len(result["architecture"]["blocks"]),
                      "source": result.get("source", {})},
            "task_items": result.get("task_items"),
            "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}


def describe(runs: list[dict]) -> list[str]:
    """Lines about the dense model measured in ``runs`` (the docs print them under the setting):
    its size, held-out perplexity and accuracy against chance."""
    if not runs:
        return []
    model = runs[0]["model"]
    source = model.get("source", {})
    dense = [r["metrics"]["dense_accuracy"] for r in runs]
    lines = [f"Dense model `{model['size']}`: {model['params'] / 1e6:.2f} M parameters, "
             f"pre-training held-out perplexity {source.get('val_perplexity', float('nan')):.2f} "
             f"(unigram {source.get('unigram_perplexity', float('nan')):.1f}); dense accuracy "
             f"{100 * min(dense):.1f}-{100 * max(dense):.1f}% over the seeds' question sets of "
             f"{runs[0].get('task_items')} items (chance {100 / 4:.0f}%)."]
    regimes = {r.key: r.label for r in REGIMES}
    for key, label in regimes.items():
        removed = [r["metrics"]["removed_blocks"] for r in runs if r["arm"] == "comp"
                   and r["regime"] == key and r["metrics"].get("removed_blocks") is not None]
        if removed:
            lines.append(f"{label}: COMP's coarse step removed "
                         + ", ".join(f"{v:.0f}" for v in removed)
                         + f" whole blocks in its {len(removed)} runs (of 12).")
    cpu = [r["cpu_s"] for r in runs if r.get("cpu_s") is not None]
    if cpu:
        lines.append(f"{len(runs)} runs took {sum(cpu) / 60:.1f} CPU-minutes in all (one torch "
                     f"thread each, pre-training not included; their wall time depends on the "
                     f"machine's load).")
    return lines
