"""What every method's run does around its own loop, written once: seeds, the torch device,
the cancellation check, the wall clock and the summary.

Seeds: one RNG per purpose, so runs are reproducible bit for bit on CPU.

Every random choice of a run draws from its own ``torch.Generator`` seeded from
``(seed, purpose, index)``: adding a worker or a draw in one place does not shift the others.
Model initialisation and dropout use torch's global RNG, which :func:`seeded_run` seeds and
restores afterwards.
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from ml.config import ConfigError
from ml.reporting import Cancelled, Reporter


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A 63-bit seed for ``purpose`` (e.g. ``"shuffle"``, worker ``index``) from the run's seed."""
    digest = hashlib.sha256(f"{seed}:{purpose}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, purpose: str, index: int = 0) -> torch.Generator:
    """A CPU generator for one purpose of the run."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, index))


def torch_device(name: str) -> torch.device:
    """``cpu``, or ``cuda`` when CUDA is available (else a ConfigError naming ``device``)."""
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError({"device": "cuda was requested but CUDA is not available on this "
                                         "host (torch.cuda.is_available() is False); use cpu"})
        return torch.device("cuda")
    return torch.device("cpu")


@contextlib.contextmanager
def seeded_run(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (model init, dropout) for the run, restore it afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, "global"))
        yield


def check_cancelled(reporter: Reporter, where: str = "") -> None:
    """Raise :class:`ml.reporting.Cancelled` once ``reporter`` says the run was cancelled."""
    if reporter.should_stop():
        raise Cancelled(f"cancelled {where}".strip())


@dataclass
class MethodRun:
    """One run of a method: its reporter, torch device and wall clock."""

    reporter: Reporter
    device: torch.device
    started: float = field(default_factory=time.perf_counter)

    def check_cancelled(self, where: str = "") -> None:
        check_cancelled(self.reporter, where)

    def wall_time_s(self) -> float:
        return time.perf_counter() - self.started

    def summary(self, final: dict[str, float], **details: Any) -> dict:
        """The JSON-able summary every method returns: ``final`` metrics, the method's own
        ``details`` and the wall time."""
        return {"final": dict(final), **details, "wall_time_s": self.wall_time_s()}


@contextlib.contextmanager
def method_run(config: Any, reporter: Reporter) -> Iterator[MethodRun]:
    """Choose ``config.device``, seed the run from ``config.seed`` and time it."""
    device = torch_device(config.device)
    with seeded_run(config.seed, device):
        yield MethodRun(reporter, device)
