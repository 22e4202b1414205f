"""Mask tuning: per-unit scales fitted by least squares to the dense model, folded into weights.

After Kwon et al., "A Fast Post-Training Pruning Framework for Transformers", NeurIPS 2022
(arXiv 2204.09656; ``prune/rescale.py`` of WoosukKwon/retraining-free-pruning), as COMP (arXiv
2501.15255) uses it. A sub-layer's output is a sum of per-unit contributions; each kept unit ``i``
gets a real scale ``m_i`` (its mask value, 1 before tuning, 0 when pruned) and ``m`` minimises::

    sum_tokens || sum_i m_i c_i(t) - b(t) ||^2,   b = teacher output - student residual

over the calibration tokens, where the *teacher output* comes from the dense model and the
residual and contributions from the already-pruned student (so each layer also absorbs the error
of the layers before it). The normal equations ``(A^T A) m = A^T b`` are accumulated per
micro-batch without ever forming ``A``:

- MLP neurons: ``c_i(t) = h_i(t) w_i`` (activation times ``down_proj`` column), so
  ``(A^T A)_ij = (w_i . w_j) (h_i . h_j)`` = ``(W^T W) o G`` and ``(A^T b)_i = sum_t h_i(t) (w_i . b(t))``.
- Attention heads (ours: the paper leaves open which layers are tuned; COMP never prunes heads,
  but their scales help a block absorb a removed block before it): ``c_h(t) = W_o[:, h] z_h(t)``.

The system is solved in float64 for the change from 1, with a small ridge toward 1 (as Kwon et
al.'s LSMR ``damp``; :func:`solve_scales`) and an SVD-based least-squares solver (``gelsd``).
As in Kwon et al., a solution with any ``|m_i| > max_scale`` (10) is rejected and the layer
keeps its unit scales. Scales are folded into the ``down_proj`` columns /
``o_proj`` head columns: the block then computes exactly what the masked block computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ml.models.transformer import Attention, SwiGLU


@dataclass
class NeuronStats:
    """Accumulated ``G = H^T H``, ``A^T b`` and ``b^T b`` of one MLP over the calibration set."""

    d_ff: int
    device: torch.device | str = "cpu"
    gram: torch.Tensor = field(init=False)
    cross: torch.Tensor = field(init=False)
    target_sq: float = 0.0
    tokens: int = 0

    def __post_init__(self):
        self.gram = torch.zeros(self.d_ff, self.d_ff, dtype=torch.float64, device=self.device)
        self.cross = torch.zeros(self.d_ff, dtype=torch.float64, device=self.device)

    @torch.no_grad()
    def add(self, activation: torch.Tensor, target: torch.Tensor | None,
            down_weight: torch.Tensor) -> None:
        """One micro-batch: ``activation`` [.., d_ff], ``target`` b [.., d_model] (``None``:
        only the Gram matrix, for scoring without tuning)."""
        h = activation.reshape(-1, self.d_ff).double()
        self.gram += h.T @ h
        self.tokens += h.shape[0]
        if target is not None:
            b = target.reshape(h.shape[0], -1).double()
            self.cross += (h * (b @ down_weight.double())).sum(0)
            self.target_sq += float(b.pow(2).sum())

    def normal_equations(self, down_weight: torch.Tensor,
                         keep: list[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A^T A, A^T b)`` restricted to the neurons ``keep``."""
        idx = torch.as_tensor(keep, dtype=torch.long, device=self.gram.device)
        w = down_weight.double()[:, idx]
        return (w.T @ w) * self.gram[idx][:, idx], self.cross[idx]


@dataclass
class HeadStats:
    """Accumulated normal equations of the per-head scales of one attention sub-layer."""

    n_heads: int
    device: torch.device | str = "cpu"
    ata: torch.Tensor = field(init=False)
    atb: torch.Tensor = field(init=False)
    target_sq: float = 0.0

    def __post_init__(self):
        self.ata = torch.zeros(self.n_heads, self.n_heads, dtype=torch.float64, device=self.device)
        self.atb = torch.zeros(self.n_heads, dtype=torch.float64, device=self.device)

    @torch.no_grad()
    def add(self, heads: torch.Tensor, target: torch.Tensor, o_weight: torch.Tensor) -> None:
        """``heads`` [tokens, n_heads, head_dim] (inputs of ``o_proj``), ``target`` b [.., d]."""
        tokens, n_heads, head_dim = heads.shape
        w = o_weight.double().view(-1, n_heads, head_dim)
        contrib = torch.einsum("thk,dhk->htd", heads.double(), w)  # [heads, tokens, d]
        b = target.reshape(tokens, -1).double()
        self.ata += torch.einsum("htd,gtd->hg", contrib, contrib)
        self.atb += torch.einsum("htd,td->h", contrib, b)
        self.target_sq += float(b.pow(2).sum())


def reconstruction_error(ata: torch.Tensor, atb: torch.Tensor, target_sq: float,
                         scales: torch.Tensor) -> float:
    """``||A m - b||^2 = m^T A^T A m - 2 m^T A^T b + b^T b`` for the given scales."""
    m = scales.double().to(ata.device)
    return float(m @ ata @ m - 2 * m @ atb + target_sq)


def solve_scales(ata: torch.Tensor, atb: torch.Tensor, max_scale: float = 10.0,
                 ridge: float = 1e-3) -> torch.Tensor | None:
    """Least-squares scales from the normal equations, damped toward 1, or ``None`` when
    rejected (non-finite or some ``|m_i| > max_scale``).

    As Kwon et al. solve for the change ``d = m - 1`` (their LSMR with ``damp=1``), we solve
    ``(A^T A + lambda I) d = A^T b - A^T A 1`` with ``lambda = ridge * mean(diag A^T A)`` (ours:
    relative, so it does not depend on the activations' scale). The damped solution never fits
    worse than ``m = 1``: ``||A m - b||^2 <= ||A 1 - b||^2 - lambda ||d||^2``.
    """
    if len(atb) == 0:
        return None
    a, b = ata.double().cpu(), atb.double().cpu()
    ones = torch.ones_like(b)
    lam = ridge * float(a.diagonal().mean().clamp_min(1e-300))
    damped = a + lam * torch.eye(len(b), dtype=a.dtype)
    d = torch.linalg.lstsq(damped, (b - a @ ones).unsqueeze(1), driver="gelsd").solution.squeeze(1)
    m = ones + d
    if not bool(torch.isfinite(m).all()) or float(m.abs().max()) > max_scale:
        return None
    return m


@torch.no_grad()
def fold_neuron_scales(mlp: SwiGLU, scales: torch.Tensor) -> None:
    """Multiply ``down_proj`` column ``i`` by ``scales[i]`` (one scale per current neuron)."""
    weight = mlp.down_proj.weight
    weight.mul_(scales.to(weight.device, weight.dtype).unsqueeze(0))


@torch.no_grad()
def fold_head_scales(attn: Attention, scales: torch.Tensor) -> None:
    """Multiply the ``o_proj`` columns of head ``h`` by ``scales[h]``."""
    weight = attn.o_proj.weight
    per_column = scales.to(weight.device, weight.dtype).repeat_interleave(attn.head_dim)
    weight.mul_(per_column.unsqueeze(0))
