"""Configs of the pruning jobs: COMP and its baselines share :class:`PruneConfig`'s keys, so one
experiment compares them on the same model, calibration set, budget and evaluation."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ml.config import MethodConfig

PAPER = ("Xu, Xu, Xu, Liao, Yao, Xie, Lightweight and Post-Training Structured Pruning for "
         "On-Device Large Language Models (COMP), arXiv 2501.15255 (2025)")


class PruneConfig(MethodConfig):
    """Model, data, budget and evaluation of a pruning job (shared by COMP and its baselines)."""

    ratio: float = Field(default=0.2, gt=0, le=0.6,
                         description="Pruning ratio: share of all the model's parameters to "
                                     "remove")
    calibration_size: int = Field(default=16, ge=1, le=4096,
                                  description="Calibration sequences (random training windows)")
    seq_len: int | None = Field(default=None, ge=8, le=8192,
                                description="Tokens per calibration / evaluation sequence; "
                                            "empty: the model's max_seq_len")
    checkpoint: str | None = Field(default=None,
                                   description="Local Hugging Face Llama-style checkpoint folder "
                                               "(config.json, model.safetensors, tokenizer.json); "
                                               "empty: the LM pre-trained on the corpus")
    corpus: str | None = Field(default=None,
                               description="Text for pre-training, calibration and evaluation: "
                                           "'pydoc', 'cpython' or a UTF-8 file path; empty: "
                                           "the model size's corpus (pydoc for tiny/small, "
                                           "cpython for medium/large)")
    model_size: Literal["small", "tiny", "deep-tiny", "deep-small", "medium", "large"] = Field(
        default="tiny", description="LM pre-trained on the corpus (no checkpoint): byte-level "
                                    "tiny (~70 k parameters, the quick default) or small "
                                    "(~0.9 M, 4 blocks); BPE deep-tiny (12 blocks, ~0.2 M, "
                                    "tests), deep-small (12 blocks, ~0.87 M, CPU-sized), "
                                    "medium (12 blocks, ~11.6 M) or large (16 blocks, "
                                    "~34 M), see ml.models.pretraining")
    pretrain_steps: int | None = Field(default=None, ge=1, le=100_000,
                                       description="Pre-training steps of that LM (cached on "
                                                   "disk); empty: 300 for tiny/small, the "
                                                   "size's own for the deep sizes")
    batch_size: int = Field(default=8, ge=1, le=1024,
                            description="Calibration sequences per micro-batch")
    eval_windows: int = Field(default=64, ge=1, le=100_000,
                              description="Held-out windows of seq_len tokens for perplexity")
    task_items: int = Field(default=200, ge=10, le=100_000,
                            description="Questions of the next-word choice task")
    task_choices: int = Field(default=4, ge=2, le=16,
                              description="Candidate words per question (chance = 1/choices)")
    latency_repeats: int = Field(default=5, ge=1, le=1000,
                                 description="Timed forward passes for the latency median")
    output_dir: str | None = Field(default=None,
                                   description="Where the pruned safetensors go; empty: "
                                               "$ESTUARY_DATA_DIR/pruned")



class CompConfig(PruneConfig):
    """COMP's own settings."""

    mask_tuning: bool = Field(default=True,
                              description="Fit least-squares scales of kept neurons and heads")
    tune_heads: bool = Field(default=True, description="Also tune per-head attention scales")
    neuron_score: Literal["condition", "wanda"] = Field(
        default="condition", description="Neuron importance: condition-based or Wanda ablation")
    damping: float = Field(default=0.01, ge=0, le=1,
                           description="Gram damping, share of its mean diagonal")
    max_scale: float = Field(default=10.0, gt=1, le=1000,
                             description="Reject a layer's scales if any |m| exceeds this")
    ridge: float = Field(default=1e-3, ge=0, le=10,
                         description="Mask tuning's ridge toward scale 1, share of mean diag")
    max_neuron_fraction: float = Field(default=0.9, gt=0, lt=1,
                                       description="Most neurons a plan may take from a block")
    coarse_blocks: int | None = Field(default=None, ge=0, le=1000,
                                      description="Blocks to remove; empty: chosen on the "
                                                  "calibration loss")


class LLMPrunerConfig(PruneConfig):
    """LLM-Pruner's settings (no recovery)."""

    skip_first: int = Field(default=0, ge=0, le=1000,
                            description="Blocks at the start left unpruned")
    skip_last: int = Field(default=0, ge=0, le=1000,
                           description="Blocks at the end left unpruned")


class LLMPrunerLoraConfig(LLMPrunerConfig):
    """LLM-Pruner with LoRA recovery."""

    recovery_steps: int = Field(default=30, ge=1, le=100_000, description="LoRA training steps")
    recovery_batch_size: int = Field(default=8, ge=1, le=1024,
                                     description="Sequences per LoRA step")
    lora_rank: int = Field(default=8, ge=1, le=1024, description="LoRA rank")
    lora_alpha: float = Field(default=16.0, gt=0, le=1e4, description="LoRA alpha")
    lora_lr: float = Field(default=1e-3, gt=0, le=1, description="AdamW learning rate")


class WandaChannelConfig(PruneConfig):
    """Channel pruning's score."""

    channel_score: Literal["wanda", "magnitude"] = Field(
        default="wanda", description="wanda: ||h_j|| ||w_j||; magnitude: ||w_j|| (down column)")
