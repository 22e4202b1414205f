"""Balanced top-1 accuracy and its many/medium/few-shot split, for one subnet of the supernet.

Shot groups (ours, [I]): the usual absolute thresholds (more than 100, 20 to 100, fewer than 20
training images; Liu et al., OLTR) are made for ImageNet-LT and would leave most of a 200-image
MNIST class "medium". We rank the classes by their number of target training samples and cut the
ranking in thirds: the top ``floor(C/3)`` classes are many-shot, the bottom ``floor(C/3)`` few-shot,
the rest medium-shot (3/4/3 classes for C = 10).
"""
from __future__ import annotations

import torch

from ml.algorithms.neural_architecture_search.supernet import Arch, SuperNet

EVAL_BATCH_SIZE = 1000
SHOT_GROUPS = ("many", "medium", "few")


@torch.no_grad()
def per_class_accuracy(supernet: SuperNet, arch: Arch, x: torch.Tensor, y: torch.Tensor,
                       calibration_x: torch.Tensor,
                       batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """Recall of each class (float64, one entry per class) of subnet ``arch`` on ``(x, y)``.

    The subnet's BatchNorm statistics are first calibrated on ``calibration_x``.
    """
    supernet.calibrate(arch, calibration_x)
    classes = supernet.num_classes
    correct = torch.zeros(classes, dtype=torch.float64)
    total = torch.zeros(classes, dtype=torch.float64)
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        hits = (supernet(xb, arch).argmax(dim=1) == yb).double().cpu()
        yb = yb.cpu()
        correct.index_add_(0, yb, hits)
        total.index_add_(0, yb, torch.ones_like(hits))
    if (total == 0).any():
        raise ValueError("every class needs at least one evaluation sample")
    return correct / total


def balanced_accuracy(supernet: SuperNet, arch: Arch, x: torch.Tensor, y: torch.Tensor,
                      calibration_x: torch.Tensor) -> float:
    """Mean per-class recall of subnet ``arch``: top-1 accuracy as if the set were balanced."""
    return float(per_class_accuracy(supernet, arch, x, y, calibration_x).mean())


def shot_groups(class_counts: torch.Tensor) -> dict[str, list[int]]:
    """Classes of each shot group, by rank of training count (ties broken by class id)."""
    counts = torch.as_tensor(class_counts)
    classes = counts.numel()
    third = classes // 3
    order = sorted(range(classes), key=lambda c: (-int(counts[c]), c))
    return {"many": sorted(order[:third]), "medium": sorted(order[third:classes - third]),
            "few": sorted(order[classes - third:])}


def accuracy_report(per_class: torch.Tensor, class_counts: torch.Tensor) -> dict[str, float]:
    """``accuracy`` (balanced top-1) and ``{many,medium,few}_shot_accuracy`` from class recalls."""
    report = {"accuracy": float(per_class.mean())}
    for group, members in shot_groups(class_counts).items():
        if members:
            report[f"{group}_shot_accuracy"] = float(per_class[members].mean())
    return report
