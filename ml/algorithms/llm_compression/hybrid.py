"""COMP: hybrid-granularity post-training structured pruning with mask tuning.

Xu, Xu, Xu, Liao, Yao, Xie, "Lightweight and Post-Training Structured Pruning for On-Device Large
Language Models" (COMP), arXiv 2501.15255 (2025).

The paper's steps and how each is done here:

1. **Coarse: remove whole blocks ranked by importance.** Importance is ShortGPT's Block Influence
   ``BI_l = 1 - E[cos(x_l, x_{l+1})]`` on the calibration set (importance.py; ours [I]: the
   paper's layer metric is not public). The lowest-BI blocks go first.
2. **Fine: remove MLP neurons of the remaining blocks by a matrix-condition-based score.** The
   score is ``s_j = ||w_j||^2 / [G^-1]_jj`` on the student's calibration activations, removed
   greedily with Schur-complement downdates (importance.py documents it; ours [I]). Gate/up rows
   and down columns go together (prune.py). Every kept block loses the same number of neurons
   (ours [I]); attention heads are not pruned (the paper prunes the "dense layers").
3. **Mask tuning.** Per-neuron (and, ours [I], per-head) scales fitted by least squares to the
   dense model's block outputs layer by layer, folded into ``down_proj``/``o_proj``; no gradient
   fine-tuning (masktune.py, after Kwon et al. 2022).
4. **One block at a time** (pipeline.py): memory holds one block's work and the calibration
   hidden states, never gradients or a second model.

Budget split between the granularities (ours [I]; the paper's rule is not public): the pruning
ratio is a share of all parameters (prune.py). For every number of removed blocks ``k`` whose
blocks fit in the budget (the ``k`` lowest-BI ones), the rest of the budget is spread evenly over
the neurons of the kept blocks; plans needing more than ``max_neuron_fraction`` of a block's
neurons are skipped. Each plan is dry-run block by block on the calibration set (the model is
not modified) and the one with the lowest calibration next-token loss is applied. ``coarse_blocks``
fixes ``k`` instead.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ml.algorithms.llm_compression.blockio import calibration_loss, needs_offload, on_device
from ml.algorithms.llm_compression.importance import block_influence
from ml.algorithms.llm_compression.pipeline import BlockLog, BlockwiseSettings, prune_blockwise
from ml.algorithms.llm_compression.prune import neuron_parameters, parameter_count, removal_target
from ml.models.transformer import DecoderLM


class InfeasibleBudget(ValueError):
    """No pruning plan reaches the budget within the configured limits."""


@dataclass(frozen=True)
class HybridPlan:
    """Blocks to remove (dense-model positions) and neurons to remove from each kept block."""

    drop: tuple[int, ...]
    neurons_per_block: int
    params_removed: int


@dataclass
class CompResult:
    plan: HybridPlan
    block_influence: list[float]
    candidate_losses: dict[int, float] = field(default_factory=dict)  # blocks removed -> loss
    blocks: list[BlockLog] = field(default_factory=list)


def plan_candidates(model: DecoderLM, block_scores: torch.Tensor, target: int,
                    max_neuron_fraction: float,
                    coarse_blocks: int | None = None) -> list[HybridPlan]:
    """Every feasible plan (see the module docstring), fewest removed blocks first."""
    order = [int(i) for i in torch.argsort(block_scores, stable=True)]
    counts = [coarse_blocks] if coarse_blocks is not None else range(len(model.blocks))
    plans = []
    for k in counts:
        if not 0 <= k < len(model.blocks):
            continue
        drop = tuple(sorted(order[:k]))
        removed = sum(parameter_count(model.blocks[i]) for i in drop)
        if removed > target:
            break
        kept = [b for i, b in enumerate(model.blocks) if i not in drop]
        per_neuron = sum(neuron_parameters(b) for b in kept)
        neurons = int(round((target - removed) / per_neuron))
        if neurons > max_neuron_fraction * min(b.mlp.d_ff for b in kept):
            continue
        plans.append(HybridPlan(drop, neurons, removed + neurons * per_neuron))
    return plans


def comp_prune(model: DecoderLM, calib_x: torch.Tensor, calib_y: torch.Tensor, ratio: float,
               settings: BlockwiseSettings, *, max_neuron_fraction: float = 0.9,
               coarse_blocks: int | None = None, device: torch.device | None = None,
               check_stop: Callable[[], None] = lambda: None,
               log: Callable[[str], None] = lambda _m: None) -> CompResult:
    """Prune ``model`` in place by ``ratio`` of its parameters with COMP (steps 1-4 above)."""
    device = torch.device(device) if device is not None else calib_x.device
    calib_x, calib_y = calib_x.to(device), calib_y.to(device)
    scores = block_influence(model, calib_x, settings.batch_size, device)
    log("block influence: " + ", ".join(f"{i}:{s:.4f}" for i, s in enumerate(scores.tolist())))
    target = removal_target(model, ratio)
    plans = plan_candidates(model, scores, target, max_neuron_fraction, coarse_blocks)
    if not plans:
        raise InfeasibleBudget(
            f"no plan removes {target} parameters with at most {max_neuron_fraction:.0%} of each "
            f"block's neurons" + (f" and {coarse_blocks} blocks" if coarse_blocks is not None else ""))
    losses: dict[int, float] = {}
    chosen = plans[0]
    if len(plans) > 1:
        for plan in plans:
            dry = prune_blockwise(model, calib_x, drop=set(plan.drop),
                                  neurons_to_remove=plan.neurons_per_block, settings=settings,
                                  device=device, in_place=False, check_stop=check_stop)
            losses[len(plan.drop)] = _final_loss(model, dry.hidden, calib_y, settings.batch_size,
                                                 device)
            log(f"plan: remove blocks {list(plan.drop)} and {plan.neurons_per_block} neurons per "
                f"kept block -> calibration loss {losses[len(plan.drop)]:.4f}")
            del dry
        chosen = min(plans, key=lambda p: (losses[len(p.drop)], len(p.drop)))
    result = prune_blockwise(model, calib_x, drop=set(chosen.drop),
                             neurons_to_remove=chosen.neurons_per_block, settings=settings,
                             device=device, in_place=True, check_stop=check_stop)
    return CompResult(plan=chosen, block_influence=scores.tolist(), candidate_losses=losses,
                      blocks=result.blocks)


def _final_loss(model: DecoderLM, hidden: torch.Tensor, targets: torch.Tensor, batch_size: int,
                device: torch.device) -> float:
    offload = needs_offload(model, device)
    with on_device(model.norm, device, offload), on_device(model.head, device, offload):
        return calibration_loss(model, hidden, targets, batch_size)
