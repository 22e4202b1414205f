"""Re-weighted losses for long-tailed targets (IMB-NAS, arXiv 2210.00136, step 3).

- Class-balanced weights (Cui et al., CVPR 2019, "Class-Balanced Loss Based on Effective Number
  of Samples"): the effective number of samples of class c is ``(1 - beta**n_c) / (1 - beta)``
  and its weight is the inverse, ``w_c = (1 - beta) / (1 - beta**n_c)``, normalised so that
  ``sum_c w_c = C``. ``beta = 0.9999`` as in Cui et al. for CIFAR-LT.
- Inverse-frequency weights: ``w_c ∝ 1 / n_c``, normalised to sum to ``C``.

The weighted cross-entropy follows Cui et al.'s reference code: per-sample losses times the
weight of the sample's class, averaged over the batch (not divided by the sum of weights as
``F.cross_entropy(weight=...)`` does), so a batch of tail samples moves the model more.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

#: Cui et al.'s beta for CIFAR-LT.
DEFAULT_BETA = 0.9999

Reweighting = Literal["class-balanced", "inverse-frequency"]


def _check_counts(class_counts: torch.Tensor) -> torch.Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() < 2:
        raise ValueError("class_counts must be 1-D with one count per class (>= 2 classes)")
    if (counts < 1).any():
        empty = torch.nonzero(counts < 1).flatten().tolist()
        raise ValueError(f"classes {empty} have no training sample; their weight is undefined")
    return counts


def class_balanced_weights(class_counts: torch.Tensor, beta: float = DEFAULT_BETA) -> torch.Tensor:
    """Cui et al.'s class-balanced weights ``(1 - beta) / (1 - beta**n_c)``, summing to ``C``.

    ``beta`` in ``[0, 1)``: 0 gives equal weights, ``beta -> 1`` tends to inverse frequency.
    Returns float32 weights, one per class.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = _check_counts(class_counts)
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (weights / weights.sum() * counts.numel()).float()


def inverse_frequency_weights(class_counts: torch.Tensor) -> torch.Tensor:
    """Weights ``∝ 1 / n_c`` summing to ``C`` (float32, one per class)."""
    counts = _check_counts(class_counts)
    weights = 1.0 / counts
    return (weights / weights.sum() * counts.numel()).float()


def class_weights(class_counts: torch.Tensor, scheme: Reweighting,
                  beta: float = DEFAULT_BETA) -> torch.Tensor:
    """The weights of ``scheme`` ("class-balanced" or "inverse-frequency") for these counts."""
    if scheme == "class-balanced":
        return class_balanced_weights(class_counts, beta)
    if scheme == "inverse-frequency":
        return inverse_frequency_weights(class_counts)
    raise ValueError(f"unknown reweighting scheme {scheme!r}")


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                           weights: torch.Tensor | None) -> torch.Tensor:
    """Batch mean of ``w[y] * CE(logits, y)``; plain cross-entropy when ``weights`` is None."""
    if weights is None:
        return F.cross_entropy(logits, labels)
    per_sample = F.cross_entropy(logits, labels, reduction="none")
    return (weights.to(logits.device)[labels] * per_sample).mean()
