"""Training pieces shared by AdaSFL, MergeSFL and ParallelSFL: one split-learning iteration on
the emulated testbed, with per-worker batch sizes.

- :class:`SplitCosts`: what one sample costs (bottom FLOPs, top FLOPs, feature bytes) and the
  model sizes, measured once from the split model; :meth:`SplitCosts.iteration_cost` turns them
  into the linear per-worker time model that batch-size regulation and clustering use.
- :class:`SampleStream`: a worker's shard drawn in batches of any size (epoch after epoch).
- :func:`merged_iteration`: MergeSFL's feature merging. The hub (the server, or a cluster's top
  worker in ParallelSFL) waits for every member's features, concatenates them, takes **one**
  top-model step on the merged batch and dispatches each member its gradient slice scaled by
  ``sum_j b_j / b_i`` (:func:`dispatch_gradients`), the gradient of that member's own mean loss.
- :func:`sequential_iteration`: SFL-V2 as SplitFed does it (and AdaSFL, MergeSFL without
  merging): the server takes each worker's batch in arrival order and steps the top model on it.

Waiting time (ours): a worker "waits" while its features sit at the hub before the hub starts
on them, i.e. for slower workers (merging) or for the busy server (sequential); plus its idle
time in the barrier that ends a round (:func:`ml.fl.waiting.round_end_barrier`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from ml.algorithms.split_control import IterationCost
from ml.algorithms.splitfed import LABEL_BYTES
from ml.fl import SplitServer, SplitWorker, TrainData
from ml.models import count_flops, model_bytes, training_flops_per_sample
from ml.testbed.emulator import EmulatedDevice, Testbed


@dataclass(frozen=True)
class SplitCosts:
    """Per-sample work and bytes of a split model, and the sizes of its halves."""

    feature_shape: tuple[int, ...]
    feature_bytes: int  # fp32 features of one sample (the gradient has the same size)
    bottom_forward_flops: int
    bottom_backward_flops: int
    top_train_flops: int
    bottom_bytes: int
    top_bytes: int

    @classmethod
    def measure(cls, bottom: nn.Module, top: nn.Module, input_shape: tuple[int, ...],
                device: torch.device) -> "SplitCosts":
        probe = torch.zeros((1, *input_shape), device=device)
        with torch.no_grad():
            feature_shape = tuple(int(d) for d in bottom(probe).shape[1:])
        forward = count_flops(bottom, probe)
        return cls(
            feature_shape=feature_shape,
            feature_bytes=4 * math.prod(feature_shape),
            bottom_forward_flops=forward,
            bottom_backward_flops=training_flops_per_sample(bottom, input_shape) - forward,
            top_train_flops=training_flops_per_sample(top, feature_shape),
            bottom_bytes=model_bytes(bottom, include_buffers=True),
            top_bytes=model_bytes(top, include_buffers=True),
        )

    @property
    def full_bytes(self) -> int:
        return self.bottom_bytes + self.top_bytes

    def iteration_cost(self, testbed: Testbed, devices: list[EmulatedDevice],
                       hub: EmulatedDevice) -> IterationCost:
        """Linear time model of one iteration for each of ``devices`` exchanging with ``hub``.

        Per sample: bottom forward and backward on the device, features and label up, gradient
        down (nothing when the device is the hub itself). Fixed: the two one-way latencies.
        """
        per, fixed = [], []
        for dev in devices:
            compute = Testbed.compute_time(dev, self.bottom_forward_flops
                                           + self.bottom_backward_flops)
            if dev is hub:
                per.append(compute)
                fixed.append(0.0)
                continue
            up = (self.feature_bytes + LABEL_BYTES) * 8 / Testbed.bandwidth_bps(dev, hub)
            down = self.feature_bytes * 8 / Testbed.bandwidth_bps(hub, dev)
            per.append(compute + up + down)
            fixed.append(Testbed.latency_s(dev, hub) + Testbed.latency_s(hub, dev))
        return IterationCost(np.array(per), np.array(fixed))


class SampleStream:
    """A worker's shard as an endless stream of samples: ``take(n)`` returns the next n indices.

    Each epoch is a fresh permutation from the worker's own generator (as
    :class:`ml.fl.BatchStream`), so batches of varying size never repeat a sample within an
    epoch; a batch larger than the rest of the epoch continues into the next one.
    """

    def __init__(self, shard: torch.Tensor, generator: torch.Generator):
        if len(shard) == 0:
            raise ValueError("cannot stream an empty shard")
        self.shard = shard
        self.generator = generator
        self._epoch = shard[:0]

    def __len__(self) -> int:
        return len(self.shard)

    def take(self, n: int) -> torch.Tensor:
        pieces = []
        while n > 0:
            if len(self._epoch) == 0:
                self._epoch = self.shard[torch.randperm(len(self.shard), generator=self.generator)]
            pieces.append(self._epoch[:n])
            self._epoch = self._epoch[n:]
            n -= len(pieces[-1])
        return torch.cat(pieces)


@dataclass
class IterationResult:
    """What one iteration trained on and how long its members waited (seconds, by worker)."""

    loss_sum: float = 0.0
    samples: int = 0
    label_counts: dict[int, torch.Tensor] = field(default_factory=dict)
    waiting_s: dict[int, float] = field(default_factory=dict)


def dispatch_gradients(merged_grad: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Cut the gradient of the merged mean loss into the members' slices, each scaled by
    ``sum(sizes) / size``: worker i then receives the gradient of its *own* mean loss."""
    total = sum(sizes)
    return [g * (total / b) for g, b in zip(merged_grad.split(sizes), sizes)]


TopLRScaling = Literal["none", "sqrt", "linear"]


def top_lr_factor(rule: TopLRScaling, merged_batch: int, per_worker_batch: int,
                  progress: float = 1.0) -> float:
    """Learning-rate multiplier of the merged top-model step (ours; large-batch practice).

    The merged step averages the loss over ``merged_batch`` samples, where SFL-V2 would take
    ``merged_batch / per_worker_batch`` steps of ``per_worker_batch``; ``linear`` scales the rate
    by that ratio (Goyal et al. 2017), ``sqrt`` by its square root (Krizhevsky 2014), ``none``
    keeps it. ``progress`` in [0, 1] ramps the multiplier linearly from 1 (warm-up).
    """
    ratio = max(merged_batch / per_worker_batch, 1.0)
    full = {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[rule]
    return 1.0 + (full - 1.0) * min(max(progress, 0.0), 1.0)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (the top model's, per round)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def emulate_merged(testbed: Testbed, hub: EmulatedDevice, devices: list[EmulatedDevice],
                   sizes: list[int], costs: SplitCosts) -> list[float]:
    """Advance the clocks through one merged iteration; return each member's waiting time.

    Members compute their bottom forward and send features and labels; the hub waits for all,
    runs the top step on the merged batch and sends the gradient slices back one after another
    (its uplink serialises them); each member back-propagates once its slice has arrived.
    """
    arrivals = []
    for dev, b in zip(devices, sizes):
        testbed.compute(dev, b * costs.bottom_forward_flops)
        arrivals.append(testbed.send(dev, hub, b * (costs.feature_bytes + LABEL_BYTES),
                                     "features"))
    for arrival in arrivals:
        testbed.receive(hub, arrival)
    start = hub.clock_s
    testbed.compute(hub, sum(sizes) * costs.top_train_flops)
    for dev, b in zip(devices, sizes):
        testbed.receive(dev, testbed.send(hub, dev, b * costs.feature_bytes, "gradients"))
        testbed.compute(dev, b * costs.bottom_backward_flops)
    return [start - arrival for arrival in arrivals]


def merged_iteration_time(costs: SplitCosts, devices: list[EmulatedDevice], hub: EmulatedDevice,
                          sizes: list[int]) -> float:
    """Emulated duration of one merged iteration, on scratch copies of the devices."""
    copies = {id(d): EmulatedDevice(d.name, d.profile) for d in [*devices, hub]}
    scratch = Testbed([copies[id(d)] for d in devices], None,
                      others=[] if any(d is hub for d in devices) else [copies[id(hub)]])
    emulate_merged(scratch, copies[id(hub)], [copies[id(d)] for d in devices], sizes, costs)
    return scratch.now()


def merged_iteration(testbed: Testbed, hub: EmulatedDevice, server: SplitServer,
                     members: list[SplitWorker], batches: list[tuple[torch.Tensor, torch.Tensor]],
                     costs: SplitCosts, num_classes: int) -> IterationResult:
    """One MergeSFL iteration: merge every member's features, one top step, scaled slices back."""
    sizes = [len(y) for _, y in batches]
    features = [worker.forward(x) for worker, (x, _) in zip(members, batches)]
    labels = torch.cat([y for _, y in batches])
    loss, grad = server.train_step(torch.cat(features), labels)
    for worker, g in zip(members, dispatch_gradients(grad, sizes)):
        worker.backward(g)
    waits = emulate_merged(testbed, hub, [w.device for w in members], sizes, costs)
    return IterationResult(
        loss_sum=loss.item() * len(labels), samples=len(labels),
        label_counts={w.index: torch.bincount(y, minlength=num_classes).cpu()
                      for w, (_, y) in zip(members, batches)},
        waiting_s={w.index: wait for w, wait in zip(members, waits)})


def sequential_iteration(testbed: Testbed, hub: EmulatedDevice, server: SplitServer,
                         members: list[SplitWorker],
                         batches: list[tuple[torch.Tensor, torch.Tensor]], costs: SplitCosts,
                         num_classes: int) -> IterationResult:
    """One SFL-V2 iteration: the server steps the top model on each worker's batch in turn,
    in arrival order (ties by worker index), as :mod:`ml.algorithms.splitfed` does."""
    result = IterationResult()
    arrivals = []
    for worker, (x, y) in zip(members, batches):
        testbed.compute(worker.device, len(y) * costs.bottom_forward_flops)
        arrivals.append(testbed.send(worker.device, hub,
                                     len(y) * (costs.feature_bytes + LABEL_BYTES), "features"))
    for i in sorted(range(len(members)), key=lambda i: (arrivals[i], members[i].index)):
        worker, (x, y) = members[i], batches[i]
        loss, grad = server.train_step(worker.forward(x), y)
        worker.backward(grad)
        testbed.receive(hub, arrivals[i])
        result.waiting_s[worker.index] = hub.clock_s - arrivals[i]
        testbed.compute(hub, len(y) * costs.top_train_flops)
        back = testbed.send(hub, worker.device, len(y) * costs.feature_bytes, "gradients")
        testbed.receive(worker.device, back)
        testbed.compute(worker.device, len(y) * costs.bottom_backward_flops)
        result.loss_sum += loss.item() * len(y)
        result.samples += len(y)
        result.label_counts[worker.index] = torch.bincount(y, minlength=num_classes).cpu()
    return result


def draw_batches(streams: list[SampleStream], data: TrainData, members: list[int],
                 sizes: list[int] | np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The next batch of each member, of its own size."""
    return [data.batch(streams[i].take(int(b))) for i, b in zip(members, sizes)]


