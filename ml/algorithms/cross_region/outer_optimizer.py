"""The outer optimiser: a global copy of each fragment stepped with Nesterov SGD on pseudo-gradients.

DiLoCo (arXiv 2311.08105, steps 3-4; docs/methods/diloco.md): the pseudo-gradient is *global
minus local*, Δ = (1/M) Σ_m (θ̃ − θ_m), and the outer step follows PyTorch's
``SGD(nesterov=True)`` convention: v ← μ·v + Δ, then θ̃ ← θ̃ − η_out·(Δ + μ·v); with μ = 0 it is
plain SGD, θ̃ ← θ̃ − η_out·Δ.
Streaming DiLoCo keeps one such optimiser (and momentum buffer) per fragment.
"""
from __future__ import annotations

import torch
from torch import Tensor


class GlobalFragment:
    """The global copy θ̃_p of one fragment with its own outer momentum."""

    def __init__(self, initial: list[Tensor], lr: float, momentum: float):
        self.params = [t.detach().clone() for t in initial]
        self.lr = lr
        self.momentum = momentum
        self._velocity: list[Tensor] | None = None

    def pseudo_gradient(self, local: list[Tensor]) -> list[Tensor]:
        """θ̃_p − θ_{m,p}: how far a worker's fragment moved away from the global copy."""
        return [g - loc.to(g.dtype) for g, loc in zip(self.params, local)]

    @torch.no_grad()
    def step(self, delta: list[Tensor]) -> None:
        """One outer Nesterov step on the averaged pseudo-gradient ``delta``."""
        if self.momentum == 0.0:
            for param, d in zip(self.params, delta):
                param.sub_(d, alpha=self.lr)
            return
        if self._velocity is None:
            self._velocity = [d.clone() for d in delta]
        else:
            for v, d in zip(self._velocity, delta):
                v.mul_(self.momentum).add_(d)
        for param, v, d in zip(self.params, self._velocity, delta):
            param.sub_(d + self.momentum * v, alpha=self.lr)
