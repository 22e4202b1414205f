"""Physically shrinking a :class:`DecoderLM`, and sizing a pruning budget in parameters.

Removal is real: dropped blocks leave ``model.blocks``; a pruned MLP neuron takes its
``gate_proj``/``up_proj`` rows and its ``down_proj`` column with it; a pruned head its q/k/v rows
and ``o_proj`` columns (:meth:`SwiGLU.prune_channels`, :meth:`Attention.prune_heads`). The model
then has fewer parameters and FLOPs and saves/loads with its new shapes
(:meth:`DecoderLM.architecture`).

Budget (ours): a pruning ratio ``r`` asks to remove ``r`` of *all* the model's parameters
(embedding and head included, so the parameter count really drops by ``r``), as LLM-Pruner
reports its ratios. :func:`removal_target` turns it into a number of parameters.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from ml.models.transformer import DecoderBlock, DecoderLM


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def neuron_parameters(block: DecoderBlock) -> int:
    """Parameters one MLP neuron holds: a gate row, an up row and a down column."""
    return 3 * block.mlp.gate_proj.in_features


def head_parameters(block: DecoderBlock) -> int:
    """Parameters one attention head holds: q/k/v rows and o columns of ``head_dim`` each."""
    return 4 * block.attn.q_proj.in_features * block.attn.head_dim


def removal_target(model: DecoderLM, ratio: float) -> int:
    """Parameters to remove for pruning ratio ``ratio`` of the whole model."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    return int(round(ratio * model.num_parameters()))


def remove_blocks(model: DecoderLM, indices: Iterable[int]) -> None:
    """Delete blocks ``indices`` (positions in ``model.blocks``) from the model."""
    drop = set(int(i) for i in indices)
    if any(not 0 <= i < len(model.blocks) for i in drop):
        raise ValueError(f"block indices must be in [0, {len(model.blocks)}), got {sorted(drop)}")
    if len(drop) == len(model.blocks):
        raise ValueError("cannot remove every block")
    model.blocks = nn.ModuleList(b for i, b in enumerate(model.blocks) if i not in drop)


def remove_neurons(block: DecoderBlock, removed: Sequence[int]) -> list[int]:
    """Remove MLP neurons ``removed`` of ``block``; return the kept indices (ascending)."""
    gone = set(int(i) for i in removed)
    keep = [i for i in range(block.mlp.d_ff) if i not in gone]
    block.mlp.prune_channels(keep)
    return keep


def remove_heads(block: DecoderBlock, removed: Sequence[int]) -> list[int]:
    """Remove attention heads ``removed`` of ``block``; return the kept heads (ascending)."""
    gone = set(int(i) for i in removed)
    keep = [h for h in range(block.attn.n_heads) if h not in gone]
    block.attn.prune_heads(keep)
    return keep
