"""Seeds and torch devices: one RNG per purpose, so runs are reproducible bit for bit on CPU.

Every random choice of a run draws from its own ``torch.Generator`` seeded from
``(seed, purpose, index)``: adding a worker or a draw in one place does not shift the others.
Model initialisation and dropout use torch's global RNG, which :func:`seeded_run` seeds and
restores afterwards.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import torch

from ml.config import ConfigError


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
