"""How a method reports what it measures.

A method receives a :class:`Reporter` and calls :meth:`Reporter.metric` for every point. The
CLI and tests use :class:`MemoryReporter`; an agent passes one that posts batches to the control
plane. Methods poll :meth:`Reporter.should_stop` between rounds so a cancelled run ends within
one round.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

from ml import wire

#: Metric names every method uses with the same meaning (see docs/architecture.md).
STANDARD_METRICS = (
    "accuracy", "loss", "perplexity", "traffic_bytes", "round_time_s",
    "ttft_ms", "tbt_ms", "memory_bytes", "sim_time_s",
)


@dataclass(frozen=True)
class MetricPoint:
    """One measurement: ``value`` of ``name`` at ``step``, on the emulated and the wall clock."""

    name: str
    step: int
    value: float
    sim_time_s: float
    wall_time_s: float

    def as_dict(self) -> dict:
        return asdict(self)


class Cancelled(Exception):
    """Raised inside a method when its reporter says the run was cancelled."""


class Reporter(Protocol):
    def metric(self, name: str, step: int, value: float, sim_time_s: float) -> None:
        """Record one point; wall time is taken by the reporter."""

    def log(self, message: str) -> None:
        """A line for the run's log."""

    def should_stop(self) -> bool:
        """True once the run was cancelled; the method should return promptly."""


@dataclass
class MemoryReporter:
    """Keeps every point in memory; optionally echoes logs to stderr."""

    echo: bool = False
    points: list[MetricPoint] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    _start: float = field(default_factory=time.perf_counter)

    def metric(self, name: str, step: int, value: float, sim_time_s: float) -> None:
        # The control plane's rules (ml.wire), so a run the CLI accepts an agent can report.
        point = wire.check_point(name, step, value, sim_time_s,
                                 time.perf_counter() - self._start)
        self.points.append(MetricPoint(**point))

    def log(self, message: str) -> None:
        self.logs.append(message)
        if self.echo:
            print(message, file=sys.stderr)

    def should_stop(self) -> bool:
        return False

    def series(self, name: str) -> list[MetricPoint]:
        """Points of one metric in step order."""
        return sorted((p for p in self.points if p.name == name), key=lambda p: p.step)

    def last(self, name: str) -> float:
        """The value at the highest step of ``name``."""
        series = self.series(name)
        if not series:
            raise KeyError(name)
        return series[-1].value
