"""Model weights as plain lists of tensors, and their weighted average.

A module's weights are its parameters followed by its buffers (BatchNorm statistics), in
``module.parameters()`` / ``module.buffers()`` order: what FedAvg exchanges and averages.
"""
from __future__ import annotations

import torch
from torch import nn

Weights = list[torch.Tensor]


def state_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The live tensors that make up ``module``'s weights (parameters, then buffers)."""
    return [*module.parameters(), *module.buffers()]


def get_weights(module: nn.Module) -> Weights:
    """A detached copy of ``module``'s weights."""
    return [t.detach().clone() for t in state_tensors(module)]


@torch.no_grad()
def set_weights(module: nn.Module, weights: Weights) -> None:
    """Copy ``weights`` into ``module`` in place (shapes must match)."""
    tensors = state_tensors(module)
    if len(tensors) != len(weights):
        raise ValueError(f"expected {len(tensors)} tensors, got {len(weights)}")
    for dst, src in zip(tensors, weights):
        dst.copy_(src)


def weights_bytes(weights: Weights) -> int:
    return sum(t.numel() * t.element_size() for t in weights)


class WeightedAverage:
    """Running ``sum_k n_k w_k / sum_k n_k`` of weights; integer buffers keep their maximum.

    Accumulates as weights arrive, so the coordinator never holds more than one model besides
    the running sum.
    """

    def __init__(self) -> None:
        self._sum: Weights | None = None
        self._total = 0.0

    @torch.no_grad()
    def add(self, weights: Weights, weight: float) -> None:
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if self._sum is None:
            self._sum = [t.to(torch.float64 if t.is_floating_point() else t.dtype, copy=True)
                         for t in weights]
            for acc in self._sum:
                if acc.is_floating_point():
                    acc.mul_(weight)
        else:
            for acc, t in zip(self._sum, weights):
                if acc.is_floating_point():
                    acc.add_(t, alpha=weight)
                else:
                    torch.maximum(acc, t, out=acc)
        self._total += weight

    @property
    def total_weight(self) -> float:
        return self._total

    @torch.no_grad()
    def result(self, like: Weights) -> Weights:
        """The average, in the dtypes of ``like``; ``like`` itself when nothing had weight."""
        if self._sum is None or self._total <= 0:
            return [t.clone() for t in like]
        return [(acc / self._total).to(ref.dtype) if acc.is_floating_point() else acc.clone()
                for acc, ref in zip(self._sum, like)]
