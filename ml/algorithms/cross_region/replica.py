"""One region's replica: a copy of the model, its inner AdamW and its shard of the corpus.

The inner loop of DiLoCo (arXiv 2311.08105, step 2): AdamW (betas 0.9/0.95, weight decay 0.1),
gradient clipping at 1.0, linear warm-up then cosine decay over the whole run (the authors'
``get_cosine_schedule_with_warmup``). Inner optimiser state is kept across outer steps. On CUDA
the forward pass runs under bf16 autocast (parameters, optimiser state and the outer loop stay
fp32).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ml.data.text import SequenceDataset
from ml.models.transformer import lm_loss

GRAD_CLIP = 1.0
ADAM_BETAS = (0.9, 0.95)


def warmup_cosine(warmup_steps: int, total_steps: int):
    """Learning-rate factor at step s: linear warm-up, then cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA, nothing on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


class Replica:
    """A region training its own copy of the model on its own data."""

    def __init__(self, model: nn.Module, data: SequenceDataset, batch_size: int,
                 generator: torch.Generator, lr: float, weight_decay: float,
                 warmup_steps: int, total_steps: int, device: torch.device):
        self.model = model.to(device)
        self.data = data
        self.batch_size = batch_size
        self.generator = generator
        self.device = device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=ADAM_BETAS,
                                           weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(warmup_steps, total_steps))
        self.params: dict[str, torch.Tensor] = {
            name: p for name, p in model.named_parameters() if p.requires_grad}

    def train_step(self) -> float:
        """One inner AdamW step on a fresh batch of this region's shard; returns the loss."""
        x, y = self.data.sample_batch(self.batch_size, self.generator)
        x, y = x.to(self.device), y.to(self.device)
        self.model.train()
        with autocast_for(self.device):
            logits, _ = self.model(x)
            loss = lm_loss(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def tensors(self, names: tuple[str, ...]) -> list[torch.Tensor]:
        """The live parameter tensors called ``names`` (edit them under ``no_grad``)."""
        return [self.params[n].data for n in names]


@torch.no_grad()
def held_out_loss(model: nn.Module, data: SequenceDataset, max_windows: int, batch_size: int,
                  device: torch.device) -> float:
    """Mean next-token loss over up to ``max_windows`` held-out windows spread evenly over it."""
    count = min(len(data), max_windows)
    picks = torch.linspace(0, len(data) - 1, count).round().long().tolist()
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for start in range(0, count, batch_size):
            pairs = [data[i] for i in picks[start:start + batch_size]]
            x = torch.stack([p[0] for p in pairs]).to(device)
            y = torch.stack([p[1] for p in pairs]).to(device)
            with autocast_for(device):
                logits, _ = model(x)
            total += float(lm_loss(logits.float(), y)) * y.numel()
            tokens += y.numel()
    finally:
        model.train(was_training)
    return total / tokens
