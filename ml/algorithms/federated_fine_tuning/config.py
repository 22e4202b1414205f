"""Configs of ``fedspine`` and its baselines ``fedlora``, ``hetlora`` and ``prune-then-finetune``.

They share :class:`LoRAFedConfig` (data, base model, clients, local training, LoRA), so each
baseline of an experiment receives the FedSpine experiment's common keys unchanged. Defaults run
in well under a minute on one CPU thread once the base model is cached (its first pre-training
takes about a minute).
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from ml.config import MethodConfig, ProfileOverride


class LoRAFedConfig(MethodConfig):
    """Federated LoRA fine-tuning of the pre-trained base on a byte-window classification task."""

    testbed: str | list[ProfileOverride] = Field(
        default="jetson80", description="A preset name or a list of device profiles (edge "
                                        "devices are the clients, the first cloud device the server)")
    dataset: Literal["source-kinds", "pydoc-topics"] = Field(
        default="source-kinds", description="Downstream task: classify byte windows by file "
                                            "kind (prose/Python/C/reST/test vectors) or pydoc "
                                            "windows by topic group (5 classes each)")
    base: Literal["tiny", "small", "core"] = Field(
        default="small", description="Pre-trained decoder (next-byte LM on pydoc), frozen")
    workers: int = Field(default=4, ge=1, le=200, description="Clients (edge devices)")
    rounds: int = Field(default=5, ge=1, le=10_000, description="Communication rounds")
    local_steps: int = Field(default=20, ge=1, le=10_000,
                             description="Local LoRA iterations per round")
    batch_size: int = Field(default=16, ge=1, le=1024, description="Local mini-batch size")
    lr: float = Field(default=3e-3, gt=0, le=1, description="Local AdamW learning rate")
    lora_scaling: float = Field(default=1.0, gt=0, le=100,
                                description="LoRA update scale alpha/rank, equal for every rank")
    partition: Literal["iid", "dirichlet"] = Field(default="dirichlet",
                                                   description="How data is split over clients")
    partition_alpha: float = Field(default=0.5, gt=0, le=1000,
                                   description="Dirichlet concentration (partition=dirichlet)")
    eval_every: int = Field(default=1, ge=1, description="Evaluate every this many rounds")
    test_samples: int = Field(default=200, ge=10, le=100_000,
                              description="Held-out windows used for evaluation")

    needs_server: ClassVar[bool] = True


class FedLoRAConfig(LoRAFedConfig):
    """FedLoRA: one rank for every client."""

    rank: int = Field(default=8, ge=1, le=256, description="LoRA rank of every client")
    target_sparsity: float = Field(
        default=0.0, ge=0, lt=1,
        description="0: no pruning (FedLoRA). Otherwise every client prunes once, after "
                    "prune_every iterations of round 1, to this sparsity (equal-sparsity runs)")
    prune_every: int = Field(default=10, ge=1, le=10_000,
                             description="Iterations before the one-shot pruning")


class HetLoRAConfig(LoRAFedConfig):
    """HetLoRA: ranks by device capability, rank self-pruning, sparsity-weighted aggregation."""

    rank_min: int = Field(default=2, ge=1, le=256, description="Smallest client rank")
    rank_max: int = Field(default=16, ge=1, le=256, description="Largest client rank")
    self_prune_gamma: float = Field(
        default=0.5, ge=0, le=1,
        description="A client drops its last rank when that component's share of the update "
                    "norm is below gamma / rank")
    target_sparsity: float = Field(default=0.0, ge=0, lt=1,
                                   description="As fedlora: one-shot pruning in round 1 if > 0")
    prune_every: int = Field(default=10, ge=1, le=10_000,
                             description="Iterations before the one-shot pruning")

    @model_validator(mode="after")
    def _ranks_ordered(self):
        if self.rank_min > self.rank_max:
            raise PydanticCustomError("rank_min", "rank_min must be <= rank_max")
        return self


class PruneThenFinetuneConfig(LoRAFedConfig):
    """Prune the base once, data-free, at a fixed ratio; then FedLoRA on the pruned base."""

    rank: int = Field(default=8, ge=1, le=256, description="LoRA rank of every client")
    target_sparsity: float = Field(default=0.5, ge=0, lt=1,
                                   description="Fixed pruning ratio applied before fine-tuning")


class FedSpineConfig(LoRAFedConfig):
    """FedSpine: iterative prune-and-recover on clients, S-UCB choosing (ratio, rank)."""

    target_sparsity: float = Field(default=0.5, ge=0, lt=1,
                                   description="Sparsity every client reaches by round "
                                               "prune_rounds (default: the last round)")
    prune_rounds: int = Field(default=0, ge=0, le=10_000,
                              description="Round by which every client reaches the target "
                                          "sparsity, leaving the rounds after it to recover; "
                                          "0: the last round")
    prune_every: int = Field(default=10, ge=1, le=10_000,
                             description="LoRA recovery iterations between pruning steps "
                                         "(paper: 20)")
    ratio_min: float = Field(default=0.02, ge=0, le=1,
                             description="Smallest per-round pruning ratio the bandit may pick")
    ratio_max: float = Field(default=0.3, ge=0, le=1,
                             description="Largest per-round pruning ratio the bandit may pick")
    rank_min: int = Field(default=2, ge=1, le=256, description="Smallest LoRA rank")
    rank_max: int = Field(default=16, ge=1, le=256, description="Largest LoRA rank")
    importance_ema: float = Field(default=0.9, ge=0, lt=1,
                                  description="Smoothing of importance scores (EMA beta)")
    ucb_c: float = Field(default=0.1, ge=0, le=10, description="S-UCB exploration weight")
    ucb_smoothness: float = Field(default=0.1, ge=0, le=10,
                                  description="S-UCB smoothness allowance L (reward per unit "
                                              "distance)")
    reward_beta: float = Field(default=1.0, ge=0, le=100,
                               description="Reward weight of pruning progress")
    reward_gamma: float = Field(default=0.05, ge=0, le=100,
                                description="Reward weight of the relative LoRA update norm")
    reward_lambda: float = Field(default=0.5, ge=0, le=100,
                                 description="Reward weight of relative completion time")

    @model_validator(mode="after")
    def _ranges_ordered(self):
        if self.ratio_min > self.ratio_max:
            raise PydanticCustomError("ratio_min", "ratio_min must be <= ratio_max")
        if self.rank_min > self.rank_max:
            raise PydanticCustomError("rank_min", "rank_min must be <= rank_max")
        if self.prune_rounds > self.rounds:
            raise PydanticCustomError("prune_rounds", "prune_rounds must be <= rounds")
        return self

    @property
    def sparse_by(self) -> int:
        """The round by which every client is at the target sparsity."""
        return self.prune_rounds or self.rounds
