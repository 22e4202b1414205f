"""Training pieces shared by AdaSFL, MergeSFL and ParallelSFL: one split-learning iteration on
the emulated testbed, with per-worker batch sizes.

- :class:`SplitCosts`: what one sample costs (bottom FLOPs, top FLOPs, feature bytes) and the
  model sizes, measured once from the split model; :meth:`SplitCosts.iteration_cost` turns them
  into the linear per-worker time model that batch-size regulation and clustering use.
- :func:`merged_iteration` / :func:`call_merged_iteration` (in-process workers / the role
  program's workers through the runtime): MergeSFL's feature merging. The hub (the server, or
  a cluster's top worker in ParallelSFL) waits for every member's features, concatenates
  them, takes **one** top-model step on the merged batch (:func:`merge_step`) and dispatches
  each member its gradient slice scaled by ``sum_j b_j / b_i`` (:func:`dispatch_gradients`),
  the gradient of that member's own mean loss.
- :func:`call_sequential_iteration`: SFL-V2 as SplitFed does it (and AdaSFL, MergeSFL without
  merging): the server takes each worker's batch in arrival order and steps the top model on it.

Waiting time (ours): a worker "waits" while its features sit at the hub before the hub starts
on them, i.e. for slower workers (merging) or for the busy server (sequential); plus its idle
time in the barrier that ends a round (:func:`ml.fl.waiting.round_end_barrier`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ml.algorithms.split_learning.config import TopLRScaling
from ml.algorithms.split_learning.planning import IterationCost
from ml.algorithms.split_learning.sampling import SampleStream
from ml.algorithms.split_learning.workers import SplitServer, SplitWorker
from ml.fl import TrainData
from ml.models import count_flops, model_bytes, training_flops_per_sample
from ml.testbed.emulator import EmulatedDevice, Testbed

LABEL_BYTES = 8  # int64 class ids, sent with the features


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


def merge_step(server: SplitServer, features: list[torch.Tensor],
               labels: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Feature merging at the hub: one top step on the members' concatenated features; the
    merged loss and each member's scaled gradient slice (:func:`dispatch_gradients`)."""
    loss, grad = server.train_step(torch.cat(features), torch.cat(labels))
    return loss, dispatch_gradients(grad, [len(y) for y in labels])


def _label_counts(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(y, minlength=num_classes).cpu()


def merged_iteration(testbed: Testbed, hub: EmulatedDevice, server: SplitServer,
                     members: list[SplitWorker], batches: list[tuple[torch.Tensor, torch.Tensor]],
                     costs: SplitCosts, num_classes: int) -> IterationResult:
    """One MergeSFL iteration on in-process workers and given batches (see
    :func:`call_merged_iteration` for the role program's)."""
    features = [worker.forward(x) for worker, (x, _) in zip(members, batches)]
    labels = [y for _, y in batches]
    loss, grads = merge_step(server, features, labels)
    for worker, g in zip(members, grads):
        worker.backward(g)
    waits = emulate_merged(testbed, hub, [w.device for w in members], [len(y) for y in labels],
                           costs)
    samples = sum(len(y) for y in labels)
    return IterationResult(
        loss_sum=loss.item() * samples, samples=samples,
        label_counts={w.index: _label_counts(y, num_classes) for w, y in zip(members, labels)},
        waiting_s={w.index: wait for w, wait in zip(members, waits)})


def call_merged_iteration(workers: list, testbed: Testbed, hub: EmulatedDevice,
                          server: SplitServer, members: list[int], sizes: list[int],
                          costs: SplitCosts, num_classes: int) -> IterationResult:
    """One merged iteration through the runtime: ``workers[i]`` (a runtime's worker, any
    :class:`~ml.algorithms.split_learning.workers.SampledSplitWorker`) of every member draws
    and forwards ``sizes`` samples; the hub (this process) merges, steps, dispatches slices."""
    futures = [workers[i].call("forward_take", b, reply_kind="features")
               for i, b in zip(members, sizes)]
    replies = [f.result() for f in futures]
    labels = [y for _, y in replies]
    loss, grads = merge_step(server, [f for f, _ in replies], labels)
    for i, g in zip(members, grads):
        workers[i].cast("backward", g, kind="gradients")
    devices = [testbed.workers[i] for i in members]
    waits = emulate_merged(testbed, hub, devices, sizes, costs)
    samples = sum(len(y) for y in labels)
    return IterationResult(
        loss_sum=loss.item() * samples, samples=samples,
        label_counts={i: _label_counts(y, num_classes) for i, y in zip(members, labels)},
        waiting_s=dict(zip(members, waits)))


def call_sequential_iteration(workers: list, testbed: Testbed, hub: EmulatedDevice,
                              server: SplitServer, members: list[int], sizes: list[int],
                              costs: SplitCosts, num_classes: int) -> IterationResult:
    """One SFL-V2 iteration through the runtime: the server steps the top model on each
    member's batch in turn, in emulated arrival order (ties by worker index), as
    :mod:`ml.algorithms.split_learning.splitfed` does, in both runtimes."""
    result = IterationResult()
    devices = [testbed.workers[i] for i in members]
    arrivals = []
    for device, b in zip(devices, sizes):
        testbed.compute(device, b * costs.bottom_forward_flops)
        arrivals.append(testbed.send(device, hub, b * (costs.feature_bytes + LABEL_BYTES),
                                     "features"))
    order = sorted(range(len(members)), key=lambda k: (arrivals[k], members[k]))
    futures = {k: workers[members[k]].call("forward_take", sizes[k], reply_kind="features")
               for k in order}
    for k in order:
        i, device = members[k], devices[k]
        features, y = futures[k].result()
        loss, grad = server.train_step(features, y)
        workers[i].cast("backward", grad, kind="gradients")
        testbed.receive(hub, arrivals[k])
        result.waiting_s[i] = hub.clock_s - arrivals[k]
        testbed.compute(hub, len(y) * costs.top_train_flops)
        back = testbed.send(hub, device, len(y) * costs.feature_bytes, "gradients")
        testbed.receive(device, back)
        testbed.compute(device, len(y) * costs.bottom_backward_flops)
        result.loss_sum += loss.item() * len(y)
        result.samples += len(y)
        result.label_counts[i] = _label_counts(y, num_classes)
    return result


def draw_batches(streams: list[SampleStream], data: TrainData, members: list[int],
                 sizes: list[int] | np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The next batch of each member, of its own size."""
    return [data.batch(streams[i].take(int(b))) for i, b in zip(members, sizes)]
