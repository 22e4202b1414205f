"""COMP and its baselines in the catalogue (the job itself: runner.py)."""
from __future__ import annotations

import functools

from ml.algorithms.llm_compression.config import (PAPER, CompConfig, LLMPrunerConfig,
                                                  LLMPrunerLoraConfig, PruneConfig,
                                                  WandaChannelConfig)
from ml.algorithms.llm_compression.runner import Kind, run_pruning
from ml.registry import Method, register

METRICS = ("perplexity", "accuracy", "params", "flops", "latency_ms", "prune_peak_memory_bytes",
           "memory_bytes", "prune_time_s", "achieved_ratio", "sim_time_s")
LLM_PRUNER_PAPER = ("Ma, Fang, Wang, LLM-Pruner: On the Structural Pruning of Large Language "
                    "Models, NeurIPS 2023 (arXiv 2305.11627)")
BASELINES = ("llm-pruner", "llm-pruner-lora", "wanda-channel", "layer-prune")


def _register(name: Kind, config: type[PruneConfig], summary: str, paper: str = PAPER,
              baselines: tuple[str, ...] = (), metrics: tuple[str, ...] = METRICS) -> Method:
    return register(Method(name=name, paper=paper, summary=summary, config=config,
                           run=functools.partial(run_pruning, name), baselines=baselines,
                           metrics=metrics, family="llm-compression"))


COMP = _register(
    "comp", CompConfig,
    "Post-training structured pruning of a decoder LM: remove whole blocks by Block Influence, "
    "then MLP neurons by a condition-based score, with least-squares mask tuning folded into "
    "the weights, one block at a time; no gradients, no fine-tuning.",
    baselines=BASELINES)
LLM_PRUNER = _register(
    "llm-pruner", LLMPrunerConfig,
    "LLM-Pruner (Ma et al. 2023): remove attention heads and MLP channels of every block by "
    "first-order Taylor group importance from one backward pass; no recovery.",
    paper=LLM_PRUNER_PAPER)
LLM_PRUNER_LORA = _register(
    "llm-pruner-lora", LLMPrunerLoraConfig,
    "LLM-Pruner followed by its LoRA recovery (adapters on every linear layer, merged after).",
    paper=LLM_PRUNER_PAPER,
    metrics=METRICS + ("loss",))
WANDA_CHANNEL = _register(
    "wanda-channel", WandaChannelConfig,
    "Wanda-style structured pruning: remove the MLP channels with the lowest activation-norm x "
    "weight-norm score, the same number in every block; no tuning.",
    paper="Sun, Liu, Bair, Kolter, A Simple and Effective Pruning Approach for Large Language "
          "Models (Wanda), arXiv 2306.11695 (2023); structured wanda_sp variant")
LAYER_PRUNE = _register(
    "layer-prune", PruneConfig,
    "ShortGPT-style layer pruning: remove the whole blocks with the lowest Block Influence.",
    paper="Men et al., ShortGPT: Layers in Large Language Models are More Redundant Than You "
          "Expect, arXiv 2403.03853 (2024)")
