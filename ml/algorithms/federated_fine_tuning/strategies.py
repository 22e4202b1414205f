"""The per-method parts of the round loop: who trains at which rank and sparsity, how the
server aggregates, and what it learns from a round.

- :class:`FedSpineStrategy`: one S-UCB bandit per client picks (pruning ratio, rank) each
  round; the client's round target is ``min(S, s + max(ratio, (S - s) / rounds_left))`` (the
  floor, ours, guarantees every client reaches the target sparsity S by round ``prune_rounds``,
  by default the last, so methods are compared at equal sparsity); entry-wise
  heterogeneous-rank aggregation.
- :class:`FixedRankStrategy`: FedLoRA, one rank; optional one-shot pruning in round 1.
- :class:`HetLoRAStrategy`: ranks from device capability, rank self-pruning, zero-padded
  sparsity-weighted aggregation.
- :class:`PruneFirstStrategy`: prune-then-fine-tune, the base pruned once by weight magnitude
  before round 1, then FedLoRA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ml.algorithms.federated_fine_tuning.adapters import (EntryMeanAggregator, LoRAState,
                                                          ZeroPadAggregator)
from ml.algorithms.federated_fine_tuning.bandit import SmoothUCB, reward
from ml.algorithms.federated_fine_tuning.config import (FedLoRAConfig, FedSpineConfig,
                                                        HetLoRAConfig, PruneThenFinetuneConfig)
from ml.algorithms.federated_fine_tuning.importance import least_important, magnitude_scores
from ml.algorithms.federated_fine_tuning.structure import Structure, sparsity
from ml.algorithms.federated_fine_tuning.training import LocalResult, Plan
from ml.method_run import derive_seed
from ml.models.transformer import DecoderLM
from ml.testbed.emulator import EmulatedDevice


@dataclass
class ClientView:
    """What the server knows of a client: its device, data size, structure (the pruning plan
    it sends down, updated from what the client sends back) and HetLoRA's rank."""

    index: int
    device: EmulatedDevice
    num_samples: int
    structure: Structure
    rank: int = 0  # the rank HetLoRA's self-pruning maintains

    @property
    def name(self) -> str:
        return f"client-{self.index:02d}"


class StrategyContext(Protocol):
    """What a strategy sees of the server (``roles.Server``)."""

    base: DecoderLM
    clients: list[ClientView]


class Strategy(Protocol):
    """What differs between FedSpine and the baselines (the server's policy)."""

    max_rank: int
    prune_every: int

    def setup(self, ctx: StrategyContext) -> None: ...

    def plans(self, ctx: StrategyContext, step: int) -> list[Plan]: ...

    def aggregator(self, like: LoRAState): ...

    def weight(self, client: ClientView, result: LocalResult) -> float: ...

    def feedback(self, ctx: StrategyContext, step: int, plans: list[Plan],
                 results: list[LocalResult], times: list[float]) -> dict[str, float]: ...


class _Base:
    max_rank: int
    prune_every: int

    def setup(self, ctx) -> None:
        pass

    def aggregator(self, like: LoRAState):
        return EntryMeanAggregator(like)

    def weight(self, client: ClientView, result: LocalResult) -> float:
        return float(client.num_samples)

    def feedback(self, ctx, step, plans, results, times) -> dict[str, float]:
        return {}


class FedSpineStrategy(_Base):
    def __init__(self, config: FedSpineConfig):
        self.c = config
        self.max_rank, self.prune_every = config.rank_max, config.prune_every
        self.bandits: list[SmoothUCB] = []
        self.points: list[np.ndarray] = []

    def setup(self, ctx) -> None:
        self.bandits = [SmoothUCB(c=self.c.ucb_c, smoothness=self.c.ucb_smoothness,
                                  seed=derive_seed(self.c.seed, "bandit", i) % 2**32)
                        for i in range(len(ctx.clients))]

    def plans(self, ctx, step: int) -> list[Plan]:
        c, left = self.c, max(self.c.sparse_by - step + 1, 1)
        plans, self.points = [], []
        for client, bandit in zip(ctx.clients, self.bandits):
            point = bandit.select()
            ratio, rank = SmoothUCB.to_arm(point, (c.ratio_min, c.ratio_max),
                                           (c.rank_min, c.rank_max))
            s = sparsity(ctx.base, client.structure)
            target = min(c.target_sparsity, s + max(ratio, (c.target_sparsity - s) / left))
            plans.append(Plan(rank=rank, target_sparsity=target,
                              track_importance=s < c.target_sparsity - 1e-9, ratio=ratio))
            self.points.append(point)
        return plans

    def feedback(self, ctx, step, plans, results, times) -> dict[str, float]:
        norms = [r.update_norm for r in results]
        mean_norm = float(np.mean(norms)) or 1.0
        out = {}
        for i, (client, result) in enumerate(zip(ctx.clients, results)):
            others = [t for j, t in enumerate(times) if j != i] or [times[i]]
            r = reward(result.loss_before, result.loss_after,
                       result.sparsity_after - result.sparsity_before, times[i],
                       float(np.mean(others)), norms[i] / mean_norm, beta=self.c.reward_beta,
                       gamma=self.c.reward_gamma, lam=self.c.reward_lambda)
            self.bandits[i].update(self.points[i], r)
            out[f"reward/{client.name}"] = r
        return out


class FixedRankStrategy(_Base):
    """FedLoRA (and its equal-sparsity variant: one-shot pruning in round 1)."""

    def __init__(self, config: FedLoRAConfig):
        self.c = config
        self.max_rank, self.prune_every = config.rank, config.prune_every

    def plans(self, ctx, step: int) -> list[Plan]:
        prune = step == 1 and self.c.target_sparsity > 0
        return [Plan(rank=self.c.rank, target_sparsity=self.c.target_sparsity if prune else 0.0,
                     track_importance=prune, ratio=self.c.target_sparsity if prune else 0.0)
                for _ in ctx.clients]


class PruneFirstStrategy(_Base):
    """Prune-then-fine-tune: magnitude pruning of the base to a fixed ratio, then FedLoRA."""

    def __init__(self, config: PruneThenFinetuneConfig):
        self.c = config
        self.max_rank, self.prune_every = config.rank, config.local_steps

    def setup(self, ctx) -> None:
        heads, channels = magnitude_scores(ctx.base)
        full = Structure.full(ctx.base)
        q = self.c.target_sparsity
        removed_h = least_important(heads, full.heads, round((1 - q) * full.num_heads()))
        removed_c = least_important(channels, full.channels, round((1 - q) * full.num_channels()))
        pruned = full.without(removed_h, removed_c)
        for client in ctx.clients:
            client.structure = pruned

    def plans(self, ctx, step: int) -> list[Plan]:
        return [Plan(rank=self.c.rank, target_sparsity=0.0, track_importance=False,
                     ratio=self.c.target_sparsity if step == 1 else 0.0) for _ in ctx.clients]


class HetLoRAStrategy(_Base):
    """HetLoRA (Cho et al. 2024): heterogeneous ranks known from device capability (ours: the
    rank scales with the device's compute rate between rank_min and rank_max), rank
    self-pruning, zero-padded aggregation weighted by the update norm."""

    def __init__(self, config: HetLoRAConfig):
        self.c = config
        self.max_rank, self.prune_every = config.rank_max, config.prune_every

    def setup(self, ctx) -> None:
        rates = np.array([c.device.profile.compute_gflops for c in ctx.clients])
        span = self.c.rank_max - self.c.rank_min
        for client, rate in zip(ctx.clients, rates):
            client.rank = int(round(self.c.rank_min + span * rate / rates.max()))

    def plans(self, ctx, step: int) -> list[Plan]:
        prune = step == 1 and self.c.target_sparsity > 0
        return [Plan(rank=c.rank, target_sparsity=self.c.target_sparsity if prune else 0.0,
                     track_importance=prune, ratio=self.c.target_sparsity if prune else 0.0)
                for c in ctx.clients]

    def aggregator(self, like: LoRAState):
        return ZeroPadAggregator(like)

    def weight(self, client: ClientView, result: LocalResult) -> float:
        return float(client.num_samples) * max(result.update_norm, 1e-12)

    def feedback(self, ctx, step, plans, results, times) -> dict[str, float]:
        for client, result in zip(ctx.clients, results):
            client.rank = self_pruned_rank(result.state, result.rank, self.c.rank_min,
                                           self.c.self_prune_gamma)
        return {}


def self_pruned_rank(state: LoRAState, rank: int, rank_min: int, gamma: float) -> int:
    """HetLoRA's rank self-pruning (threshold ours): drop the last rank component when its
    share of ``Σ_j ||B[:, j]||·||A[j]||`` is below ``gamma / rank``."""
    if rank <= rank_min:
        return rank
    share = np.zeros(rank)
    for key, a in state.items():
        if key.endswith("lora_A"):
            b = state[key[:-1] + "B"]
            share += (b.norm(dim=0) * a.norm(dim=1)).double().numpy()
    total = share.sum()
    if total > 0 and share[-1] / total < gamma / rank:
        return rank - 1
    return rank
