"""How split-learning workers draw their batches, and what the coordinator knows of it.

- :class:`SampleStream`: a worker's shard drawn in batches of any size (AdaSFL, MergeSFL,
  ParallelSFL).
- :class:`BatchSizes`: the sizes of SplitFed's fixed-size batches, known to the coordinator
  without the worker's data.
"""
from __future__ import annotations

import torch


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


class BatchSizes:
    """The sizes of a worker's successive mini-batches (ml.fl.batches: every epoch cuts its
    ``n`` samples into batches of ``batch_size``, the last one smaller), known to the
    coordinator without the worker's data, so it can order the batches before they arrive."""

    def __init__(self, samples: int, batch_size: int):
        if samples == 0:
            raise ValueError("cannot draw a batch from an empty shard")
        self.samples = samples
        self.batch_size = batch_size
        self._position = 0

    def next(self) -> int:
        size = min(self.batch_size, self.samples - self._position)
        self._position = (self._position + size) % self.samples
        return size
