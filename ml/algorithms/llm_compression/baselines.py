"""COMP's baselines, on the same model, calibration set and parameter budget.

- ``llm-pruner``: Ma, Fang, Wang, "LLM-Pruner: On the Structural Pruning of Large Language
  Models", NeurIPS 2023 (arXiv 2305.11627; code horseee/LLM-Pruner). Block-wise pruning of
  attention heads and MLP channels by first-order group importance: one backward pass of the
  calibration loss, element-wise salience ``|w * dL/dw|`` summed over each group (a head: its q/k/v
  rows and o columns; a channel: its gate/up rows and down column; the ``param_first`` Taylor
  with ``sum`` reduction, the authors' default). Every pruned block loses the same share
  ``p``: ``floor(p * heads)`` heads (heads are pruned whole, as their ``consecutive_groups``
  does) and as many channels as complete the block's share. The blocks ``skip_first`` /
  ``skip_last`` at either end are left alone (the authors skip 4 of 32 at the start, 2 at the
  end). Optional **LoRA recovery** (``recovery``): rank-``r`` adapters on every linear layer of
  every block, AdamW on next-token loss over the training split, merged into the weights after.
- ``wanda-channel``: Wanda-style structured channel pruning (Sun et al. 2023, arXiv 2306.11695,
  structured as in its ``wanda_sp`` variant): each MLP channel scores ``||h_j||_2 * ||w_j||_2``
  (activation norm times ``down_proj`` column norm) on the student's calibration activations,
  block by block; the same number of channels is removed from every block; no recovery. With
  ``score="magnitude"`` the score is the weight norm ``||w_j||_2`` alone (no activations).
- ``layer-prune``: ShortGPT-style layer removal (Men et al. 2024, arXiv 2403.03853): remove the
  blocks with the lowest Block Influence; whole blocks cannot hit the budget exactly, so (ours)
  the number of blocks is the one whose parameters come closest to it (at least one block), and
  the achieved ratio is reported beside the requested one.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ml.algorithms.llm_compression.blockio import micro_batches
from ml.algorithms.llm_compression.importance import block_influence, lowest
from ml.algorithms.llm_compression.pipeline import BlockwiseSettings, prune_blockwise
from ml.algorithms.llm_compression.prune import (
    head_parameters, neuron_parameters, parameter_count, remove_blocks, remove_heads,
    remove_neurons, removal_target,
)
from ml.data.text import SequenceDataset
from ml.method_run import generator
from ml.models.lora import apply_lora, lora_modules, remove_lora
from ml.models.transformer import DecoderLM, lm_loss

#: Every linear layer of a block, LLM-Pruner's LoRA targets.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# -- LLM-Pruner -----------------------------------------------------------------------------------

def taylor_group_importance(model: DecoderLM, calib_x: torch.Tensor, calib_y: torch.Tensor,
                            batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(head importance [heads], channel importance [d_ff])`` per block, from the gradient of
    the mean calibration loss (accumulated over micro-batches). Gradients are freed after."""
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    model.eval()  # no dropout: the importance of the model as it will run
    for s in micro_batches(len(calib_x), batch_size):
        loss = lm_loss(model(calib_x[s])[0], calib_y[s]) * ((s.stop - s.start) / len(calib_x))
        loss.backward()
    scores = []
    with torch.no_grad():
        for block in model.blocks:
            attn, mlp = block.attn, block.mlp
            heads, dim = attn.n_heads, attn.head_dim
            head_imp = sum(_salience(lin).view(heads, dim, -1).sum((1, 2))
                           for lin in (attn.q_proj, attn.k_proj, attn.v_proj))
            head_imp = head_imp + _salience(attn.o_proj).view(-1, heads, dim).sum((0, 2))
            channel_imp = (_salience(mlp.gate_proj).sum(1) + _salience(mlp.up_proj).sum(1)
                           + _salience(mlp.down_proj).sum(0))
            scores.append((head_imp, channel_imp))
    model.zero_grad(set_to_none=True)
    for p in params:
        p.requires_grad_(False)
    return scores


def _salience(linear: torch.nn.Linear) -> torch.Tensor:
    return (linear.weight * linear.weight.grad).abs()


@dataclass(frozen=True)
class LLMPrunerPlan:
    blocks: tuple[int, ...]  # blocks that are pruned
    share: float  # share p of each pruned block's parameters
    heads_per_block: int
    channels_per_block: int


def llm_pruner_plan(model: DecoderLM, ratio: float, skip_first: int, skip_last: int) -> LLMPrunerPlan:
    """Per-block head and channel counts that remove ``ratio`` of the model's parameters."""
    n = len(model.blocks)
    blocks = tuple(range(min(skip_first, n), max(min(skip_first, n), n - skip_last)))
    if not blocks:
        raise ValueError(f"skip_first={skip_first} and skip_last={skip_last} leave no block of "
                         f"{n} to prune")
    target = removal_target(model, ratio)
    prunable = sum(parameter_count(model.blocks[i]) for i in blocks)
    share = target / prunable
    if share >= 0.95:
        raise ValueError(f"removing {ratio:.0%} of the model needs {share:.0%} of the pruned "
                         f"blocks; prune more blocks (skip_first/skip_last) or a smaller ratio")
    block = model.blocks[blocks[0]]
    heads = int(share * block.attn.n_heads)
    per_block = target / len(blocks)
    channels = int(round((per_block - heads * head_parameters(block)) / neuron_parameters(block)))
    channels = max(0, min(channels, block.mlp.d_ff - 1))
    return LLMPrunerPlan(blocks, share, heads, channels)


def llm_pruner_prune(model: DecoderLM, calib_x: torch.Tensor, calib_y: torch.Tensor,
                     plan: LLMPrunerPlan, batch_size: int) -> None:
    """Remove, in each block of ``plan``, its least important heads and channels."""
    scores = taylor_group_importance(model, calib_x, calib_y, batch_size)
    for i in plan.blocks:
        head_imp, channel_imp = scores[i]
        remove_heads(model.blocks[i], lowest(head_imp, plan.heads_per_block))
        remove_neurons(model.blocks[i], lowest(channel_imp, plan.channels_per_block))


def lora_recovery(model: DecoderLM, train_tokens: torch.Tensor, *, steps: int, batch_size: int,
                  seq_len: int, rank: int, alpha: float, lr: float, seed: int,
                  device: torch.device, dropout: float = 0.05,
                  on_step: Callable[[int, float], None] = lambda _s, _l: None) -> None:
    """LLM-Pruner's recovery: train LoRA adapters on next-token loss, then merge them.

    ``on_step(step, loss)`` runs after every step (it may raise to cancel; the adapters are
    removed either way, merged).
    """
    apply_lora(model, LORA_TARGETS, rank=rank, alpha=alpha, dropout=dropout)
    params = [p for _, m in lora_modules(model) for p in m.lora_parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    data = SequenceDataset(train_tokens, seq_len)
    draws = generator(seed, "lora-recovery")
    model.train()
    try:
        for step in range(steps):
            x, y = data.sample_batch(batch_size, draws)
            loss = lm_loss(model(x.to(device))[0], y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            on_step(step + 1, loss.item())
    finally:
        model.eval()
        remove_lora(model, merge=True)
        for p in model.parameters():
            p.requires_grad_(False)


# -- Wanda-style channels -------------------------------------------------------------------------

def wanda_channel_prune(model: DecoderLM, calib_x: torch.Tensor, ratio: float, batch_size: int,
                        device: torch.device | None = None,
                        check_stop: Callable[[], None] = lambda: None,
                        score: str = "wanda") -> int:
    """Remove the same number of lowest-score (``wanda`` or ``magnitude``) MLP channels from
    every block; return that number."""
    target = removal_target(model, ratio)
    per_neuron = sum(neuron_parameters(b) for b in model.blocks)
    channels = int(round(target / per_neuron))
    if channels >= min(b.mlp.d_ff for b in model.blocks):
        raise ValueError(f"removing {ratio:.0%} of the model by MLP channels alone would empty "
                         "the MLPs; use a smaller ratio")
    settings = BlockwiseSettings(neuron_score=score, mask_tuning=False, tune_heads=False,
                                 batch_size=batch_size)
    prune_blockwise(model, calib_x, drop=set(), neurons_to_remove=channels, settings=settings,
                    device=device, check_stop=check_stop)
    return channels


# -- layer removal --------------------------------------------------------------------------------

def layer_drop_prune(model: DecoderLM, calib_x: torch.Tensor, ratio: float, batch_size: int,
                     device: torch.device | None = None) -> tuple[list[int], list[float]]:
    """Remove the lowest-BI blocks, as many as bring the removed parameters closest to the
    budget (at least one; ties remove more); return (removed, BI scores)."""
    scores = block_influence(model, calib_x, batch_size, device)
    target = removal_target(model, ratio)
    order = lowest(scores, len(model.blocks))
    best, best_gap, total = 1, None, 0
    for k, i in enumerate(order[:-1], start=1):  # always keep one block
        total += parameter_count(model.blocks[i])
        gap = abs(total - target)
        if best_gap is None or gap <= best_gap:
            best, best_gap = k, gap
        if total >= target:
            break
    removed = order[:best]
    remove_blocks(model, removed)
    return sorted(removed), scores.tolist()
