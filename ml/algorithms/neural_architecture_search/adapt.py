"""Training the supernet, and four ways of adapting it to the long-tailed target (IMB-NAS step 3).

Strategies (IMB-NAS, arXiv 2210.00136, step 3):

(a) ``full-search``: ignore the source; train a fresh supernet on the long-tailed target with the
    sandwich rule and the re-weighted loss (the expensive reference: a full NAS run on the target).
(b) ``finetune-ce``: start from the balanced source supernet and fine-tune all of it on the
    target with plain cross-entropy (sandwich rule).
(c) ``finetune-rw``: as (b) with the re-weighted loss.
(d) ``head-retrain-rw``: start from the source supernet, **freeze the backbone** and retrain only
    the linear head with the re-weighted loss (sandwich rule over subnets, so the one shared head
    fits every subnet's features). The paper's winner.

After the search (``search.py``) the chosen subnet is retrained with the *same* strategy for
``retrain_epochs`` (its weights inherited from the adapted supernet): head only for (d), every
weight of the subnet for (a)-(c).

Ours ([I]):

- every adapting strategy starts from a **re-initialised head**: the target is treated as a new
  task, so no strategy profits from the source's balanced classifier (as in cRT, Kang et al.
  2020, which re-learns the classifier);
- budget: (b), (c), (d) train for the same number of epochs over the target with the same
  optimiser, learning rate and sandwich rule. (a) trains from scratch for as many optimiser steps
  as the source pre-training and the adaptation of the others together, so it spends the same
  training steps as the whole source-then-adapt pipeline; its search cost counts all of them,
  while the others' search cost counts only their adaptation, because the source supernet is
  trained once and reused for every target (reported apart as ``source_pretrain_*``);
- SGD with momentum and a cosine learning-rate decay over each phase.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ml.algorithms.neural_architecture_search.losses import (
    DEFAULT_BETA, Reweighting, class_weights, weighted_cross_entropy,
)
from ml.algorithms.neural_architecture_search.supernet import Arch, SearchSpace, SuperNet, sandwich_archs, train_step
from ml.fl.batches import BatchStream
from ml.method_run import derive_seed, generator


@dataclass(frozen=True)
class Strategy:
    """How a strategy adapts: from the source or from scratch, which weights learn, which loss."""

    name: str
    from_source: bool
    head_only: bool
    reweighted: bool
    description: str


STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    Strategy("head-retrain-rw", from_source=True, head_only=True, reweighted=True,
             description="freeze the balanced source supernet, retrain the linear head with "
                         "the re-weighted loss"),
    Strategy("finetune-ce", from_source=True, head_only=False, reweighted=False,
             description="fine-tune the whole source supernet with cross-entropy"),
    Strategy("finetune-rw", from_source=True, head_only=False, reweighted=True,
             description="fine-tune the whole source supernet with the re-weighted loss"),
    Strategy("full-search", from_source=False, head_only=False, reweighted=True,
             description="train a supernet from scratch on the long-tailed target with the "
                         "re-weighted loss"),
]}


@dataclass(frozen=True)
class Optim:
    """SGD settings of one training phase."""

    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64


#: Called at the end of every epoch with (epoch index, mean training loss, FLOPs of the epoch);
#: it charges the emulated clock, reports, and raises ``Cancelled`` to stop.
EpochHook = Callable[[int, float, int], None]


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return math.ceil(samples / batch_size)


def train(supernet: SuperNet, x: torch.Tensor, y: torch.Tensor, *, steps: int, optim: Optim,
          archs_for_step: Callable[[], list[Arch]], loss_weights: torch.Tensor | None,
          head_only: bool, batches: torch.Generator, on_epoch: EpochHook | None = None) -> int:
    """Train for ``steps`` optimiser steps over ``(x, y)``; return the FLOPs spent.

    Each step trains the subnets ``archs_for_step()`` on one batch (accumulated gradients, one
    update). With ``head_only`` only the head's parameters are given to the optimiser and the
    backbone runs without autograd, so backbone weights cannot change.
    """
    params = list(supernet.head.parameters()) if head_only else list(supernet.parameters())
    optimizer = torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                                weight_decay=optim.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    stream = BatchStream(torch.arange(len(y)), optim.batch_size, batches)
    per_epoch = steps_per_epoch(len(y), optim.batch_size)
    device = supernet.head.weight.device

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return weighted_cross_entropy(logits, labels, loss_weights)

    supernet.train()
    total_flops = epoch_flops = 0
    epoch_loss, epoch_steps = 0.0, 0
    for step in range(steps):
        idx = stream.next().to(device)
        result = train_step(supernet, optimizer, x[idx], y[idx], archs_for_step(), loss_fn,
                            head_only=head_only)
        schedule.step()
        total_flops += result.flops
        epoch_flops += result.flops
        epoch_loss += result.loss
        epoch_steps += 1
        if (step + 1) % per_epoch == 0 or step + 1 == steps:
            if on_epoch is not None:
                on_epoch(step // per_epoch, epoch_loss / epoch_steps, epoch_flops)
                supernet.train()  # the hook may have evaluated (and calibrated) a subnet
            epoch_flops, epoch_loss, epoch_steps = 0, 0.0, 0
    return total_flops


def fresh_supernet(num_classes: int, input_shape: tuple[int, int, int], space: SearchSpace,
                   seed: int, purpose: str, device: torch.device) -> SuperNet:
    """A newly initialised supernet; its weights depend only on ``(seed, purpose)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, purpose))
        net = SuperNet(num_classes, input_shape, space)
    return net.to(device)


def reset_head(supernet: SuperNet, seed: int) -> None:
    """Re-initialise the linear head (deterministically for ``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "imbnas-head"))
        supernet.head.reset_parameters()


def train_source_supernet(x: torch.Tensor, y: torch.Tensor, num_classes: int,
                          input_shape: tuple[int, int, int], *, space: SearchSpace, epochs: int,
                          optim: Optim, num_random: int, seed: int, device: torch.device,
                          on_epoch: EpochHook | None = None) -> tuple[SuperNet, int]:
    """Sandwich-rule training on the balanced source with cross-entropy; returns (net, FLOPs)."""
    net = fresh_supernet(num_classes, input_shape, space, seed, "imbnas-source-init", device)
    rng = np.random.default_rng(derive_seed(seed, "imbnas-source-archs"))
    steps = epochs * steps_per_epoch(len(y), optim.batch_size)
    flops = train(net, x, y, steps=steps, optim=optim,
                  archs_for_step=lambda: sandwich_archs(space, rng, num_random),
                  loss_weights=None, head_only=False,
                  batches=generator(seed, "imbnas-source-batches"), on_epoch=on_epoch)
    return net, flops


def loss_weights_for(strategy: Strategy, class_counts: torch.Tensor, scheme: Reweighting,
                     beta: float = DEFAULT_BETA) -> torch.Tensor | None:
    """The class weights a strategy trains with (None: plain cross-entropy)."""
    return class_weights(class_counts, scheme, beta) if strategy.reweighted else None


def prepare_supernet(strategy: Strategy, source: SuperNet | None, *, num_classes: int,
                     input_shape: tuple[int, int, int], space: SearchSpace, seed: int,
                     device: torch.device) -> SuperNet:
    """The supernet a strategy starts from.

    From the source: a copy of it (``source`` stays untouched) with a re-initialised head, and
    with the backbone's ``requires_grad`` off for head retraining. Full search: a fresh supernet.
    """
    if not strategy.from_source:
        return fresh_supernet(num_classes, input_shape, space, seed, "imbnas-target-init", device)
    if source is None:
        raise ValueError(f"strategy {strategy.name} needs the source supernet")
    net = copy.deepcopy(source)
    reset_head(net, seed)
    if strategy.head_only:
        for p in net.backbone_parameters():
            p.requires_grad_(False)
    return net


def adapt_supernet(strategy: Strategy, net: SuperNet, x: torch.Tensor, y: torch.Tensor, *,
                   steps: int, optim: Optim, num_random: int,
                   loss_weights: torch.Tensor | None, seed: int,
                   on_epoch: EpochHook | None = None) -> int:
    """Train ``net`` (from :func:`prepare_supernet`) on the target with the strategy's rule.

    Sandwich rule over subnets; head only or every weight; returns the FLOPs spent.
    """
    rng = np.random.default_rng(derive_seed(seed, f"imbnas-{strategy.name}-archs"))
    return train(net, x, y, steps=steps, optim=optim,
                 archs_for_step=lambda: sandwich_archs(net.space, rng, num_random),
                 loss_weights=loss_weights, head_only=strategy.head_only,
                 batches=generator(seed, f"imbnas-{strategy.name}-batches"), on_epoch=on_epoch)


def retrain_subnet(strategy: Strategy, supernet: SuperNet, arch: Arch, x: torch.Tensor,
                   y: torch.Tensor, *, epochs: int, optim: Optim,
                   loss_weights: torch.Tensor | None, seed: int,
                   on_epoch: EpochHook | None = None) -> int:
    """Retrain the chosen subnet alone (in place, inheriting its weights); return the FLOPs."""
    steps = epochs * steps_per_epoch(len(y), optim.batch_size)
    if steps == 0:
        return 0
    return train(supernet, x, y, steps=steps, optim=optim, archs_for_step=lambda: [arch],
                 loss_weights=loss_weights, head_only=strategy.head_only,
                 batches=generator(seed, f"imbnas-{strategy.name}-retrain"), on_epoch=on_epoch)
