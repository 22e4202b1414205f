"""Choosing the workers that take part in a round."""
from __future__ import annotations

import torch


def participants_count(spec: float, workers: int) -> int:
    """How many of ``workers`` take part: ``spec`` <= 1 is a fraction, > 1 a count."""
    if spec <= 1:
        return max(1, round(spec * workers))
    return min(int(spec), workers)


def sample_clients(workers: int, count: int, generator: torch.Generator) -> list[int]:
    """``count`` distinct worker indices drawn uniformly, in ascending order."""
    if count >= workers:
        return list(range(workers))
    return sorted(torch.randperm(workers, generator=generator)[:count].tolist())
