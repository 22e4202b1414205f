"""Test-set accuracy and loss of a model."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

EVAL_BATCH_SIZE = 1000


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = EVAL_BATCH_SIZE) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``(x, y)``, in eval mode."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    try:
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = model(xb)
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += (logits.argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    n = max(len(y), 1)
    return correct.item() / n, loss_sum.item() / n
