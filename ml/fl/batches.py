"""Mini-batches of one worker's shard: a fresh seeded permutation every epoch.

The convention (which ``bench/ml_overhead.py``'s plain loop repeats): each epoch draws
``torch.randperm(len(shard), generator=g)`` from the worker's own generator and cuts it into
batches of ``batch_size``, the last one possibly smaller.
"""
from __future__ import annotations

from typing import Iterator

import torch


class BatchStream:
    """Index batches over one worker's shard, epoch after epoch."""

    def __init__(self, shard: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.shard = shard
        self.batch_size = batch_size
        self.generator = generator
        self._pending: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.shard)

    def epoch(self) -> list[torch.Tensor]:
        """The batches of one fresh epoch (indices into the data set)."""
        if len(self.shard) == 0:
            return []
        order = self.shard[torch.randperm(len(self.shard), generator=self.generator)]
        return list(order.split(self.batch_size))

    def epochs(self, count: int) -> Iterator[torch.Tensor]:
        for _ in range(count):
            yield from self.epoch()

    def next(self) -> torch.Tensor:
        """The next batch, continuing the current epoch and starting a new one when it ends."""
        if not self._pending:
            self._pending = self.epoch()[::-1]
            if not self._pending:
                raise ValueError("cannot draw a batch from an empty shard")
        return self._pending.pop()
