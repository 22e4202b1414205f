"""Waiting time: how long each worker idles in the barrier that ends a synchronous round.

Every synchronous method reports it the same way: the mean ``waiting_time_s`` and one series
per worker, ``waiting_time_s/worker-XX``, both cumulative.
"""
from __future__ import annotations

import numpy as np

from ml.testbed.emulator import EmulatedDevice, Testbed


def round_end_barrier(testbed: Testbed,
                      devices: list[EmulatedDevice]) -> tuple[float, dict[str, float]]:
    """Synchronise ``devices``; return the time and each device's idle seconds in the barrier."""
    before = {d.name: d.waiting_s for d in devices}
    t = testbed.barrier(devices)
    return t, {d.name: d.waiting_s - before[d.name] for d in devices}


class WaitingLedger:
    """Cumulative waiting time of every worker, reported as ``waiting_time_s/worker-XX`` and
    their mean ``waiting_time_s``."""

    def __init__(self, names: list[str]):
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}
        self.total_s = np.zeros(len(names))

    def add(self, waits: dict[int, float]) -> None:
        """Add seconds per worker index."""
        for i, seconds in waits.items():
            self.total_s[i] += max(seconds, 0.0)

    def add_by_device(self, waits: dict[str, float]) -> None:
        """Add seconds per device name (devices that are not workers are ignored)."""
        self.add({self.index[n]: s for n, s in waits.items() if n in self.index})

    def report(self, log, step: int) -> None:
        now = log.testbed.now()  # once, not once per worker
        log.metric("waiting_time_s", step, float(self.total_s.mean()), now)
        for i, seconds in enumerate(self.total_s.tolist()):
            log.metric(f"waiting_time_s/worker-{i:02d}", step, seconds, now)
