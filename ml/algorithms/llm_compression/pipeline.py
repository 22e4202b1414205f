"""The block-at-a-time pruning engine shared by COMP and the ``wanda-channel`` baseline.

Two streams of calibration hidden states move through the model one block at a time: the
*teacher* (the dense model) and the *student* (the model pruned so far). For block ``l``:

1. Dropped block: the teacher passes through it, the student skips it.
2. Kept block, with mask tuning: the teacher's output of the dense block is computed (micro-batch
   by micro-batch) and, at the same time, the normal equations of the per-head scales of the
   student's attention; the head scales are solved and folded into ``o_proj`` (masktune.py).
3. The student's MLP activations give ``G = H^T H`` (and, with tuning, ``A^T b`` against the
   teacher's block output); the neurons to remove are chosen by the configured score
   (importance.py), their gate/up rows and down columns are removed, and the least-squares
   scales of the kept neurons are folded into ``down_proj``.
4. The student passes through the pruned block.

Only one block's weights and activations are worked on at a time: besides the model, memory holds
the teacher and student hidden states of the calibration set (``2 x n x T x d_model``), the
teacher's block output, one micro-batch of activations and the ``d_ff x d_ff`` Gram matrix. On an
accelerator with the model on the CPU, each block is moved to the device for its turn only.

``in_place=False`` is a dry run: each block is pruned in a copy that is dropped after its turn,
the model is left untouched, and the final student hidden states tell the calibration loss of
that pruning plan (used by COMP to choose how many blocks to remove).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from ml.algorithms.llm_compression.blockio import (
    attention_heads, attention_output, block_forward, embed, micro_batches, mlp_activation,
    needs_offload, on_device, rope_for,
)
from ml.algorithms.llm_compression.importance import condition_removal_order, lowest, wanda_scores
from ml.algorithms.llm_compression.masktune import (
    HeadStats, NeuronStats, fold_head_scales, fold_neuron_scales, reconstruction_error,
    solve_scales,
)
from ml.algorithms.llm_compression.prune import remove_blocks, remove_neurons
from ml.models.transformer import DecoderBlock, DecoderLM

NeuronScore = Literal["condition", "wanda", "magnitude"]


@dataclass(frozen=True)
class BlockwiseSettings:
    """How each kept block is pruned and tuned."""

    neuron_score: NeuronScore = "condition"
    mask_tuning: bool = True
    tune_heads: bool = True
    damping: float = 0.01
    max_scale: float = 10.0
    ridge: float = 1e-3
    batch_size: int = 8


@dataclass
class BlockLog:
    """What happened to one block of the dense model (errors are relative: ``/ ||b||^2``)."""

    index: int
    dropped: bool
    neurons_before: int = 0
    neurons_after: int = 0
    head_error_before: float | None = None
    head_error_after: float | None = None
    neuron_error_before: float | None = None
    neuron_error_after: float | None = None
    scales_rejected: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class BlockwiseResult:
    hidden: torch.Tensor  # the student's final hidden states [n, T, d]
    blocks: list[BlockLog]


def prune_blockwise(model: DecoderLM, calib_x: torch.Tensor, *, drop: set[int] | frozenset[int],
                    neurons_to_remove: int, settings: BlockwiseSettings,
                    device: torch.device | None = None, in_place: bool = True,
                    check_stop: Callable[[], None] = lambda: None) -> BlockwiseResult:
    """Remove blocks ``drop`` and ``neurons_to_remove`` MLP neurons from every other block.

    ``calib_x`` [n, T] are calibration token ids. ``check_stop`` is called before each block
    (it raises to cancel). See the module docstring for the steps.
    """
    device = torch.device(device) if device is not None else calib_x.device
    offload = needs_offload(model, device)
    bs = settings.batch_size
    with torch.no_grad(), on_device(model.embed, device, offload):
        student = embed(model, calib_x.to(device), bs)
    teacher = student  # the streams share a tensor until they diverge; neither is written in place
    rope = rope_for(model, student)
    logs: list[BlockLog] = []
    for index, block in enumerate(list(model.blocks)):
        check_stop()
        with torch.no_grad(), on_device(block, device, offload):
            if index in drop:
                if settings.mask_tuning:
                    teacher = block_forward(block, teacher, rope, bs)
                logs.append(BlockLog(index, dropped=True))
                continue
            work = block if in_place else copy.deepcopy(block)
            log = BlockLog(index, dropped=False, neurons_before=work.mlp.d_ff)
            teacher_out = None
            if settings.mask_tuning:
                teacher_out = _teacher_pass_and_tune_heads(work, teacher, student, rope, settings,
                                                           log)
            stats = _neuron_stats(work, student, teacher_out, rope, bs)
            n_remove = min(neurons_to_remove, work.mlp.d_ff)
            down = work.mlp.down_proj.weight
            if settings.neuron_score == "condition":
                removed = condition_removal_order(stats.gram, down, n_remove, settings.damping)
            elif settings.neuron_score == "wanda":
                removed = lowest(wanda_scores(stats.gram, down), n_remove)
            else:
                removed = lowest(down.double().norm(dim=0), n_remove)
            kept = [i for i in range(work.mlp.d_ff) if i not in set(removed)]
            scales = None
            if settings.mask_tuning and kept:
                ata, atb = stats.normal_equations(down, kept)
                scales = solve_scales(ata, atb, settings.max_scale, settings.ridge)
                ones = torch.ones(len(kept), dtype=torch.float64)
                norm = max(stats.target_sq, 1e-30)
                log.neuron_error_before = reconstruction_error(ata, atb, stats.target_sq, ones) / norm
                log.neuron_error_after = (log.neuron_error_before if scales is None else
                                          reconstruction_error(ata, atb, stats.target_sq, scales) / norm)
                log.scales_rejected = log.scales_rejected or scales is None
            remove_neurons(work, removed)
            if scales is not None:
                fold_neuron_scales(work.mlp, scales)
            log.neurons_after = work.mlp.d_ff
            student = block_forward(work, student, rope, bs)
            teacher = teacher_out
            logs.append(log)
            del work
    if in_place and drop:
        remove_blocks(model, drop)
    return BlockwiseResult(hidden=student, blocks=logs)


def _teacher_pass_and_tune_heads(block: DecoderBlock, teacher: torch.Tensor,
                                 student: torch.Tensor, rope, settings: BlockwiseSettings,
                                 log: BlockLog) -> torch.Tensor:
    """The dense block's output on the teacher stream; with ``tune_heads``, fit and fold the
    student's per-head scales against the teacher's post-attention residual stream."""
    teacher_out = torch.empty_like(teacher)
    heads = HeadStats(block.attn.n_heads, teacher.device) if settings.tune_heads else None
    for s in micro_batches(len(teacher), settings.batch_size):
        mid = teacher[s] + attention_output(block, teacher[s], rope)
        teacher_out[s] = mid + block.mlp(block.mlp_norm(mid))
        if heads is not None and heads.n_heads:
            z = attention_heads(block, student[s], rope)
            heads.add(z, mid - student[s], block.attn.o_proj.weight)
    if heads is not None and heads.n_heads:
        scales = solve_scales(heads.ata, heads.atb, settings.max_scale, settings.ridge)
        norm = max(heads.target_sq, 1e-30)
        ones = torch.ones(heads.n_heads, dtype=torch.float64)
        log.head_error_before = reconstruction_error(heads.ata, heads.atb, heads.target_sq, ones) / norm
        log.head_error_after = log.head_error_before
        if scales is None:
            log.scales_rejected = True
        else:
            log.head_error_after = reconstruction_error(heads.ata, heads.atb, heads.target_sq,
                                                        scales) / norm
            fold_head_scales(block.attn, scales)
    return teacher_out


def _neuron_stats(block: DecoderBlock, student: torch.Tensor, teacher_out: torch.Tensor | None,
                  rope, batch_size: int) -> NeuronStats:
    """``G`` (and, given the teacher's block output, ``A^T b``) of the student's MLP."""
    stats = NeuronStats(block.mlp.d_ff, student.device)
    down = block.mlp.down_proj.weight
    for s in micro_batches(len(student), batch_size):
        mid = student[s] + attention_output(block, student[s], rope)
        target = None if teacher_out is None else teacher_out[s] - mid
        stats.add(mlp_activation(block, mid), target, down)
    return stats
