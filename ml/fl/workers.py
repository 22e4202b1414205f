"""Federated-learning workers, Flower style: the coordinator calls small methods.

- :class:`Worker` trains a full model on its shard (``fit(weights, epochs)``, Flower's client
  ``fit``). In-process workers take turns on a shared :class:`LocalTrainer` (one model object
  whose weights are swapped in), one per thread that trains (:class:`TrainerPool`), so memory
  does not grow with the number of workers.

Split learning's worker and server live with their family (``ml.algorithms.split_learning``).

Ours: a worker's optimiser state (momentum) starts afresh whenever new weights are set, as in
the usual FedAvg implementations.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ml.fl.batches import BatchStream
from ml.fl.weights import Weights, get_weights, set_weights
from ml.testbed.emulator import EmulatedDevice


@dataclass(frozen=True)
class TrainData:
    """Training inputs and labels on the torch device; workers index into them."""

    x: torch.Tensor
    y: torch.Tensor

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x.index_select(0, indices), self.y.index_select(0, indices)


@dataclass(frozen=True)
class SGDSettings:
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    def optimizer(self, module: nn.Module) -> torch.optim.SGD:
        return torch.optim.SGD(module.parameters(), lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)


@dataclass(frozen=True)
class TrainResult:
    """What a worker returns from local training."""

    weights: Weights
    num_samples: int  # samples in the worker's shard: its aggregation weight
    samples: int  # samples processed (for compute time)
    steps: int
    loss: float  # mean training loss over the processed samples


def sgd_step(module: nn.Module, optimizer: "torch.optim.Optimizer | LocalSGD", x: torch.Tensor,
             y: torch.Tensor) -> torch.Tensor:
    """One SGD step on cross-entropy; returns the (detached) batch loss."""
    loss = F.cross_entropy(module(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class LocalSGD:
    """SGD with momentum and weight decay, as :class:`torch.optim.SGD` computes it on the CPU
    (its single-tensor path, dampening 0, no Nesterov): the same operations in the same order,
    so the same weights bit for bit (a test compares them).

    Ours, for FedAvg's clients, who each take a handful of steps: it skips torch.optim's
    per-step bookkeeping (~0.2 ms a step) and its first use, which imports torch._dynamo
    (~1.2 s of every run's start-up).
    """

    def __init__(self, params: list[nn.Parameter], sgd: SGDSettings):
        self.params = list(params)
        self.sgd = sgd
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def reset(self) -> None:
        """Forget the momentum (a new round starts from the server's weights)."""
        self.buffers = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        lr, momentum, decay = self.sgd.lr, self.sgd.momentum, self.sgd.weight_decay
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            if decay != 0:
                grad = grad.add(p, alpha=decay)
            if momentum != 0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = grad.detach().clone()
                else:
                    buf.mul_(momentum).add_(grad, alpha=1)
                grad = buf
            p.add_(grad, alpha=-lr)


class LocalTrainer:
    """One model and its SGD optimiser, shared by in-process workers who train in turn."""

    def __init__(self, model: nn.Module, sgd: SGDSettings):
        self.model = model
        self.optimizer = LocalSGD(list(model.parameters()), sgd)

    def load(self, weights: Weights) -> None:
        set_weights(self.model, weights)
        self.optimizer.reset()


class TrainerPool:
    """The local trainers of one process's workers: one per thread that trains, so workers can
    train at once on several threads (``client_threads``) without sharing a model.

    The thread that built the pool trains on ``model`` itself; any other thread on its own copy,
    made the first time it trains. Each worker loads its weights before training, so which
    trainer it gets changes nothing in its result.
    """

    def __init__(self, model: nn.Module, sgd: SGDSettings):
        self.model = model
        self.sgd = sgd
        self._owner = threading.get_ident()
        self._local = threading.local()
        self._lock = threading.Lock()

    def get(self) -> LocalTrainer:
        """This thread's trainer."""
        trainer = getattr(self._local, "trainer", None)
        if trainer is None:
            if threading.get_ident() == self._owner:
                model = self.model
            else:
                with self._lock:
                    model = copy.deepcopy(self.model)
            trainer = self._local.trainer = LocalTrainer(model, self.sgd)
        return trainer


class Worker:
    """A FedAvg client on an emulated device, training the full model on its shard."""

    def __init__(self, index: int, device: EmulatedDevice, data: TrainData, stream: BatchStream,
                 trainers: TrainerPool):
        self.index = index
        self.device = device
        self.data = data
        self.stream = stream
        self.trainers = trainers

    @property
    def name(self) -> str:
        return self.device.name

    @property
    def num_samples(self) -> int:
        return len(self.stream)

    def fit(self, weights: Weights, epochs: int) -> TrainResult:
        """Start from ``weights``, run ``epochs`` local epochs of SGD, return the new weights."""
        trainer = self.trainers.get()
        trainer.load(weights)
        trainer.model.train()
        loss_sum = torch.zeros((), device=self.data.x.device)
        samples = steps = 0
        for indices in self.stream.epochs(epochs):
            x, y = self.data.batch(indices)
            loss_sum += sgd_step(trainer.model, trainer.optimizer, x, y) * len(indices)
            samples += len(indices)
            steps += 1
        loss = loss_sum.item() / samples if samples else 0.0
        return TrainResult(get_weights(trainer.model), self.num_samples, samples, steps, loss)
