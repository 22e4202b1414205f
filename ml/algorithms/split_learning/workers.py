"""The split-learning roles' objects: a worker's bottom model and the server's top model.

- :class:`SplitWorker` holds its own bottom model: ``next_batch``, ``forward`` (features to
  send), ``backward`` (gradients received), ``get_weights`` / ``set_weights``.
  :class:`SplitFedWorker` draws SplitFed's fixed-size batches itself (``forward_next``),
  :class:`SampledSplitWorker` batches of any size the coordinator asks for (``forward_take``), so
  in a distributed run only features and labels leave a worker.
- :class:`SplitServer` holds the top model: ``train_step(features, labels)`` returns the loss and
  the gradients to send back.

Ours: a worker's optimiser state (momentum) starts afresh whenever new weights are set, as in
the usual FedAvg implementations.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ml.algorithms.split_learning.sampling import SampleStream
from ml.fl.batches import BatchStream
from ml.fl.weights import Weights, get_weights, set_weights
from ml.fl.workers import SGDSettings, TrainData
from ml.testbed.emulator import EmulatedDevice


class SplitWorker:
    """A split-learning worker: its own bottom model, trained with gradients from the server."""

    def __init__(self, index: int, device: EmulatedDevice, data: TrainData,
                 stream: BatchStream | None, bottom: nn.Module, sgd: SGDSettings):
        self.index = index
        self.device = device
        self.data = data
        self.stream = stream
        self.bottom = bottom
        self.optimizer = sgd.optimizer(bottom)
        self._features: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return self.device.name

    @property
    def num_samples(self) -> int:
        return len(self.stream)

    def get_weights(self) -> Weights:
        return get_weights(self.bottom)

    def set_weights(self, weights: Weights) -> None:
        set_weights(self.bottom, weights)
        self.optimizer.state.clear()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next mini-batch ``(x, y)`` of the worker's shard."""
        return self.data.batch(self.stream.next())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the bottom model; return the features as sent (detached from the graph)."""
        self.bottom.train()
        self._features = self.bottom(x)
        return self._features.detach()

    def backward(self, grad: torch.Tensor) -> None:
        """Back-propagate the server's feature gradients and step the bottom optimiser."""
        if self._features is None:
            raise RuntimeError("backward() before forward()")
        self.optimizer.zero_grad(set_to_none=True)
        self._features.backward(grad)
        self.optimizer.step()
        self._features = None


class SplitServer:
    """The server side of split learning: the top model and its optimiser."""

    def __init__(self, top: nn.Module, sgd: SGDSettings):
        self.top = top
        self.optimizer = sgd.optimizer(top)

    def train_step(self, features: torch.Tensor,
                   labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step of the top model on received features.

        Returns ``(loss, grad)``: the detached batch loss and d loss / d features to send back.
        """
        self.top.train()
        features = features.detach().requires_grad_(True)
        loss = F.cross_entropy(self.top(features), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), features.grad


class SplitFedWorker(SplitWorker):
    """A SplitFed worker: draws its next batch itself, so only features and labels leave it."""

    def forward_next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the bottom on the next mini-batch; return ``(features, labels)`` to send."""
        x, y = self.next_batch()
        return self.forward(x), y


class SampledSplitWorker(SplitWorker):
    """An AdaSFL / MergeSFL / ParallelSFL worker: batches of the size the coordinator plans,
    drawn from its own :class:`SampleStream`."""

    def __init__(self, index: int, device: EmulatedDevice, data: TrainData, samples: SampleStream,
                 bottom: nn.Module, sgd: SGDSettings):
        super().__init__(index, device, data, None, bottom, sgd)
        self.samples = samples

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def forward_take(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the bottom on the next ``size`` samples; return ``(features, labels)`` to send."""
        x, y = self.data.batch(self.samples.take(int(size)))
        return self.forward(x), y
