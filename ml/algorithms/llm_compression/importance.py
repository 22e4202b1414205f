"""Importance of whole blocks (coarse step) and of MLP neurons (fine step) on calibration data.

**Block importance** (ShortGPT's Block Influence, our choice for COMP's unpublished layer metric
[I]): ``BI_l = 1 - mean_tokens cos(x_l, x_{l+1})`` where ``x_l`` enters block ``l`` and
``x_{l+1}`` leaves it, over every calibration token, on the dense model. A block that barely
turns the residual stream (BI near 0) is the cheapest to remove.

**Neuron importance, condition-based** (ours [I]; arXiv 2501.15255 leaves the formula open). For
the MLP of a block, let ``H`` be the calibration activations entering ``down_proj`` (tokens x
d_ff), ``G = H^T H`` their Gram matrix (damped: ``G + damping * mean(diag G) * I``) and ``w_j``
column ``j`` of ``down_proj``. Neuron ``j`` scores::

    s_j = ||w_j||^2 / [G^-1]_jj  =  ||w_j||^2 * ||h_j||^2 / VIF_j

``VIF_j = G_jj [G^-1]_jj`` is the variance-inflation factor of column ``j``: the per-column
condition number of ``H`` (1 for a column orthogonal to the others, large for one that is nearly
a combination of them). Equivalently ``[G^-1]_jj = sum_k V_jk^2 / sigma_k^2``: how much neuron
``j`` loads on the *small singular directions* of ``H``. So ``s_j`` is the Wanda-style score
``||h_j||^2 ||w_j||^2`` divided by the neuron's ill-conditioning; it is also the exact increase of
the MLP's output error when neuron ``j`` is removed and the others are optimally re-fitted (the
structured Optimal Brain Surgeon cost). Neurons are removed greedily: after each removal ``G^-1``
is downdated by the Schur complement (``G^-1 <- G^-1 - G^-1[:, j] G^-1[j, :] / G^-1[j, j]``) and
the scores recomputed, so of two redundant neurons only one is removed.

We do not use the literal ``kappa(H_{-j}) - kappa(H)`` reading of the score: by singular-value
interlacing removing a column never raises the condition number of a tall matrix, and the change
depends only on the two extreme singular values, which ties most neurons.

**Wanda-style** (baseline ``wanda-channel`` and COMP's ``neuron_score="wanda"`` ablation):
``s_j = ||h_j||_2 * ||w_j||_2``.
"""
from __future__ import annotations

import numpy as np
import torch

from ml.algorithms.llm_compression.blockio import (
    block_forward, embed, micro_batches, needs_offload, on_device, rope_for,
)
from ml.models.transformer import DecoderLM


@torch.no_grad()
def block_influence(model: DecoderLM, calib_x: torch.Tensor, batch_size: int,
                    device: torch.device | None = None) -> torch.Tensor:
    """``BI_l`` of every block of ``model`` (float64, length ``len(model.blocks)``).

    Streams the calibration set through one block at a time. With ``device`` set and the model
    on the CPU, each block is moved there for its turn and back (offloading).
    """
    device = device or calib_x.device
    offload = needs_offload(model, device)
    with on_device(model.embed, device, offload):
        hidden = embed(model, calib_x.to(device), batch_size)
    rope = rope_for(model, hidden)
    scores = []
    for block in model.blocks:
        with on_device(block, device, offload):
            out = block_forward(block, hidden, rope, batch_size)
        cos_sum = 0.0
        for s in micro_batches(len(hidden), batch_size):
            cos_sum += torch.nn.functional.cosine_similarity(
                hidden[s].double(), out[s].double(), dim=-1).sum().item()
        scores.append(1.0 - cos_sum / (hidden.shape[0] * hidden.shape[1]))
        hidden = out
    return torch.tensor(scores, dtype=torch.float64)


def damped_gram(gram: torch.Tensor, damping: float) -> torch.Tensor:
    """``G + damping * mean(diag G) * I`` in float64 (so ``G`` is invertible)."""
    gram = gram.double()
    scale = gram.diagonal().mean().clamp_min(1e-12)
    return gram + damping * scale * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)


def condition_scores(gram: torch.Tensor, down_weight: torch.Tensor,
                     damping: float = 0.01) -> torch.Tensor:
    """One-shot condition-based scores ``s_j = ||w_j||^2 / [G^-1]_jj`` of every neuron."""
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(damped_gram(gram, damping)))
    return down_weight.double().pow(2).sum(0) / inverse.diagonal()


def condition_removal_order(gram: torch.Tensor, down_weight: torch.Tensor, n_remove: int,
                            damping: float = 0.01) -> list[int]:
    """The ``n_remove`` neurons to remove, greedily, lowest condition-based score first.

    ``gram`` is ``H^T H`` [d_ff, d_ff]; ``down_weight`` is ``down_proj.weight`` [d_model, d_ff].
    """
    d_ff = gram.shape[0]
    if not 0 <= n_remove <= d_ff:
        raise ValueError(f"n_remove must be in [0, {d_ff}], got {n_remove}")
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(damped_gram(gram, damping)))
    # The greedy loop runs in NumPy: hundreds of tiny steps, cheaper without torch's dispatch.
    inv = inverse.cpu().numpy()
    weight_sq = down_weight.detach().double().pow(2).sum(0).cpu().numpy()
    alive = np.ones(d_ff, dtype=bool)
    removed: list[int] = []
    for _ in range(n_remove):
        scores = np.where(alive, weight_sq / np.maximum(inv.diagonal(), 1e-300), np.inf)
        j = int(np.argmin(scores))
        removed.append(j)
        alive[j] = False
        column = inv[:, j].copy()
        inv -= np.outer(column, column) / column[j]
    return removed


def wanda_scores(gram: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    """Wanda-style channel scores ``||h_j||_2 * ||w_j||_2`` (``||h_j||^2`` is ``G_jj``)."""
    return gram.double().diagonal().clamp_min(0).sqrt() * down_weight.double().norm(dim=0)


def lowest(scores: torch.Tensor, n_remove: int) -> list[int]:
    """Indices of the ``n_remove`` smallest scores (ties broken by index, deterministic)."""
    order = torch.argsort(scores, stable=True)
    return [int(i) for i in order[:n_remove]]
