"""Running one decoder block, or a part of it, on calibration hidden states in micro-batches.

Block-at-a-time pruning keeps the hidden states of the whole calibration set (``[n, T, d]``) and
pushes them through one block at a time; these helpers cut that work into micro-batches of
``batch_size`` sequences so the block's intermediate activations never exist for all sequences
at once, and expose the pieces the pruning needs: the attention output, the per-head inputs of
``o_proj`` and the MLP's intermediate activation (the input of ``down_proj``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ml.models.transformer import DecoderBlock, DecoderLM

Rope = tuple[torch.Tensor, torch.Tensor] | None


def micro_batches(n: int, batch_size: int) -> Iterator[slice]:
    """Slices ``[start, start + batch_size)`` covering ``range(n)``."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def rope_for(model: DecoderLM, hidden: torch.Tensor) -> Rope:
    """Rotary tables for a calibration batch starting at position 0."""
    return model.rotary(hidden.shape[1], 0, hidden.device, hidden.dtype)


@torch.no_grad()
def embed(model: DecoderLM, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Hidden states entering block 0 for ``tokens`` [n, T]."""
    return torch.cat([model.embed_tokens(tokens[s]) for s in micro_batches(len(tokens), batch_size)])


@torch.no_grad()
def block_forward(block: DecoderBlock, hidden: torch.Tensor, rope: Rope,
                  batch_size: int) -> torch.Tensor:
    """The block's output for every sequence of ``hidden`` [n, T, d]."""
    out = torch.empty_like(hidden)
    for s in micro_batches(len(hidden), batch_size):
        out[s] = block(hidden[s], rope)[0]
    return out


def attention_output(block: DecoderBlock, hidden: torch.Tensor, rope: Rope) -> torch.Tensor:
    """``attn(attn_norm(h))``: what the attention sub-layer adds to the residual stream."""
    return block.attn(block.attn_norm(hidden), rope)[0]


def attention_heads(block: DecoderBlock, hidden: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Per-head inputs of ``o_proj``, ``[tokens, heads, head_dim]`` (flattened over the batch)."""
    captured: list[torch.Tensor] = []
    handle = block.attn.o_proj.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        block.attn(block.attn_norm(hidden), rope)
    finally:
        handle.remove()
    z = captured[0]
    return z.reshape(-1, block.attn.n_heads, block.attn.head_dim)


def mlp_activation(block: DecoderBlock, mid: torch.Tensor) -> torch.Tensor:
    """``silu(gate(x)) * up(x)`` with ``x = mlp_norm(mid)``: the input of ``down_proj``."""
    x = block.mlp_norm(mid)
    return F.silu(block.mlp.gate_proj(x)) * block.mlp.up_proj(x)


@torch.no_grad()
def calibration_loss(model: DecoderLM, hidden: torch.Tensor, targets: torch.Tensor,
                     batch_size: int) -> float:
    """Mean next-token cross-entropy of the final hidden states against ``targets``."""
    total = 0.0
    for s in micro_batches(len(hidden), batch_size):
        logits = model.logits_from_hidden(hidden[s])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[s].reshape(-1),
                                 reduction="sum").item()
    return total / targets.numel()


def needs_offload(model: nn.Module, device: torch.device) -> bool:
    """True when ``model`` lives elsewhere (the CPU) than the ``device`` that computes."""
    return next(model.parameters()).device != torch.device(device)


@contextlib.contextmanager
def on_device(module: nn.Module, device: torch.device, offload: bool) -> Iterator[nn.Module]:
    """With ``offload``, move ``module`` to ``device`` for the ``with`` block and back to the CPU
    afterwards, so only one block's weights sit on the accelerator at a time; else a no-op."""
    if offload:
        module.to(device)
    try:
        yield module
    finally:
        if offload:
            module.to("cpu")
