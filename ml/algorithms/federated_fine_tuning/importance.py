"""Importance of heads and FFN channels from the LoRA gradients, smoothed over iterations.

First-order Taylor estimate of the loss change when a dependency group s is removed (FedSpine,
arXiv 2501.02438, does not give the formula; [I], ours): ``I_s = |Σ_{k∈s} Ĝ_k W_k|`` with W the
effective weight ``W0 + scaling·B·A`` and Ĝ the gradient of W estimated from the adapter
gradient the client computes anyway: ``∂L/∂B = scaling·G·Aᵀ``, so
``Ĝ = (∂L/∂B)·A / scaling = G·AᵀA``, G projected on A's row space. No gradient of the frozen
base is ever taken. A head's group is its q/k/v rows and o columns; a channel's is its gate/up
rows and down column. Scores are smoothed with an exponential moving average
``I ← β·I + (1-β)·I_now`` and kept in the original numbering.
"""
from __future__ import annotations

import torch

from ml.algorithms.federated_fine_tuning.structure import Structure
from ml.models.lora import LoRALinear
from ml.models.transformer import DecoderLM


def _taylor(layer: LoRALinear) -> torch.Tensor:
    """Ĝ ⊙ W of one adapted layer (zeros before the first backward)."""
    if layer.lora_B.grad is None:
        return torch.zeros_like(layer.weight)
    g_hat = layer.lora_B.grad @ layer.lora_A.detach() / layer.scaling
    w = layer.weight.detach() + layer.delta_weight().detach()
    return g_hat * w


@torch.no_grad()
def step_scores(decoder: DecoderLM) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per block, the Taylor scores of the kept heads and channels (in the pruned numbering)."""
    heads, channels = [], []
    for block in decoder.blocks:
        attn, mlp, hd = block.attn, block.mlp, decoder.head_dim
        per_row = sum(_taylor(getattr(attn, n)).sum(dim=1) for n in ("q_proj", "k_proj", "v_proj"))
        per_row = per_row + _taylor(attn.o_proj).sum(dim=0)
        heads.append(per_row.view(-1, hd).sum(dim=1).abs())
        per_ch = _taylor(mlp.gate_proj).sum(dim=1) + _taylor(mlp.up_proj).sum(dim=1)
        channels.append((per_ch + _taylor(mlp.down_proj).sum(dim=0)).abs())
    return heads, channels


class ImportanceTracker:
    """EMA of head and channel scores in the original numbering (NaN where never scored)."""

    def __init__(self, layers: int, heads: int, channels: int, beta: float = 0.9):
        self.beta = beta
        self.heads = torch.full((layers, heads), float("nan"))
        self.channels = torch.full((layers, channels), float("nan"))

    def update(self, decoder: DecoderLM, structure: Structure) -> None:
        """Fold in the scores of the gradients currently held by ``decoder``'s adapters."""
        heads, channels = step_scores(decoder)
        for b, (h_now, c_now) in enumerate(zip(heads, channels)):
            self._ema(self.heads[b], list(structure.heads[b]), h_now)
            self._ema(self.channels[b], list(structure.channels[b]), c_now)

    def _ema(self, row: torch.Tensor, idx: list[int], now: torch.Tensor) -> None:
        idx_t = torch.tensor(idx, dtype=torch.long)
        old = row[idx_t]
        row[idx_t] = torch.where(torch.isnan(old), now, self.beta * old + (1 - self.beta) * now)


def least_important(scores: torch.Tensor, kept: tuple[tuple[int, ...], ...], keep_total: int,
                    ) -> set[tuple[int, int]]:
    """The (block, index) pairs to remove so that ``keep_total`` remain, lowest score first,
    never emptying a block (ours: a block keeps at least one head and one channel)."""
    candidates = sorted(((float(torch.nan_to_num(scores[b, i], nan=0.0)), b, i)
                         for b, idx in enumerate(kept) for i in idx))
    left = [len(idx) for idx in kept]
    to_remove = sum(left) - keep_total
    removed: set[tuple[int, int]] = set()
    for _, b, i in candidates:
        if len(removed) >= to_remove:
            break
        if left[b] > 1:
            removed.add((b, i))
            left[b] -= 1
    return removed


def magnitude_scores(decoder: DecoderLM) -> tuple[torch.Tensor, torch.Tensor]:
    """Data-free scores (prune-then-fine-tune baseline, ours): L2 norm of each group's weights."""
    heads, channels = [], []
    with torch.no_grad():
        for block in decoder.blocks:
            attn, mlp, hd = block.attn, block.mlp, decoder.head_dim
            rows = sum(getattr(attn, n).weight.pow(2).sum(dim=1) for n in ("q_proj", "k_proj", "v_proj"))
            rows = rows + attn.o_proj.weight.pow(2).sum(dim=0)
            heads.append(rows.view(-1, hd).sum(dim=1).sqrt())
            ch = mlp.gate_proj.weight.pow(2).sum(1) + mlp.up_proj.weight.pow(2).sum(1)
            channels.append((ch + mlp.down_proj.weight.pow(2).sum(0)).sqrt())
    return torch.stack(heads), torch.stack(channels)
