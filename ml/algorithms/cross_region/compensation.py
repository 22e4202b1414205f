"""CoCoDC's Taylor-expansion delay compensation (arXiv 2504.17672; docs/methods/diloco.md).

When fragment p's reduce, sent at step t_s with local snapshot s_p, arrives τ steps later, the
workers have made local progress Δ_loc = θ_p(t) − s_p on a stale base. CoCoDC replays that progress
on the fresh global value θ̃_p and subtracts a DC-ASGD-style diagonal-Hessian correction
(H ≈ λ·g⊙g, so the gradient drift over the gap D = θ̃_p − s_p is ≈ λ·g⊙g⊙D), per tensor:

    c = Δ_loc ⊙ Δ_loc ⊙ D
    θ_p ← θ̃_p + Δ_loc − λ₀·‖Δ_loc‖ · c / (‖c‖ + ε)

The correction's norm is pinned to λ₀ times the local progress's norm (the authors' code computes
λ_dyn = λ₀‖g1‖/‖c/η‖ per tensor). Ours [I]: we drop their hard-coded 1/η_in = 1/4e-4 since the
normalisation cancels it (it only moved ε). With τ = 0 there is no local progress, Δ_loc = 0, and
the rule reduces to θ_p ← θ̃_p, Streaming DiLoCo's merge with α = 0.
"""
from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-8


@torch.no_grad()
def compensated_fragment(global_new: list[Tensor], snapshot: list[Tensor],
                         local_now: list[Tensor], dc_lambda: float) -> list[Tensor]:
    """The delay-compensated value of one worker's fragment, tensor by tensor.

    ``global_new`` is θ̃_p after the outer step, ``snapshot`` the worker's s_p taken at send time
    and ``local_now`` its θ_p now; returns new tensors (inputs are not changed).
    """
    out = []
    for g, s, loc in zip(global_new, snapshot, local_now):
        progress = loc.to(g.dtype) - s
        gap = g - s
        correction = progress * progress * gap
        scale = dc_lambda * progress.norm() / (correction.norm() + _EPS)
        out.append(g + progress - scale * correction)
    return out
