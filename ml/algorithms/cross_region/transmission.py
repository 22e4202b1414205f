"""When each fragment is sent: Streaming DiLoCo's staggered schedule and CoCoDC's adaptive one.

Staggered (Streaming DiLoCo, arXiv 2501.18512, step 2): fragment p is sent at steps t with
t mod H = p·⌊H/P⌋. DiLoCo is the case P = 1: everything every H steps.

Adaptive Transmission (CoCoDC, arXiv 2504.17672): every h = ⌊H/N⌋ steps (N = fragment
transmissions the link carries per H steps) one fragment is chosen:

1. a fragment whose staleness I_p = t − t_p^send ≥ H (the stalest first, ours [I]; the code
   takes the lowest index) — this bounds staleness by H;
2. else a fragment never sent (lowest index);
3. else argmax_p R_p, R_p = Σ_m ‖θ̃_p − θ_{m,p}(t)‖₁ / (I_p·|p|): the accumulated outer gradient
   per parameter and per step since the fragment was last sent, summed over workers.

Fragments whose reduce is still in flight are never chosen (ours [I]; the authors' code does not
exclude them, harmless there because h > τ).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class FragmentStatus:
    """What the schedules know about one fragment."""

    numel: int
    sent: bool = False
    last_send_step: int = 0
    in_flight: bool = False

    def staleness(self, step: int) -> int:
        """I_p: steps since the fragment was last sent (since the start if never)."""
        return step - self.last_send_step


class StaggeredSchedule:
    """Fragment p goes out whenever ``step % H == p * (H // P)`` (DiLoCo: P = 1)."""

    def __init__(self, sync_every: int, fragments: int):
        if sync_every < fragments:
            raise ValueError(f"H={sync_every} must be >= the fragment count {fragments}")
        self.sync_every = sync_every
        self.offsets = [p * (sync_every // fragments) for p in range(fragments)]

    def select(self, step: int, status: Sequence[FragmentStatus],
               score: Callable[[int], float]) -> list[int]:
        del status, score  # a fixed timetable needs neither
        phase = step % self.sync_every
        return [p for p, offset in enumerate(self.offsets) if step > 0 and phase == offset]


class AdaptiveSchedule:
    """CoCoDC's Adaptive Transmission: one fragment every ``period`` = ⌊H/N⌋ steps."""

    def __init__(self, sync_every: int, transmissions_per_round: int):
        self.sync_every = sync_every
        self.period = max(1, sync_every // max(1, transmissions_per_round))

    def select(self, step: int, status: Sequence[FragmentStatus],
               score: Callable[[int], float]) -> list[int]:
        if step <= 0 or step % self.period:
            return []
        choice = select_fragment(step, status, self.sync_every, score)
        return [] if choice is None else [choice]


def select_fragment(step: int, status: Sequence[FragmentStatus], sync_every: int,
                    score: Callable[[int], float]) -> int | None:
    """CoCoDC's choice at ``step``: stale first, never-sent next, else the best score.

    ``score(p)`` is R_p summed over workers, only evaluated when rules 1 and 2 pick nothing.
    Returns ``None`` when every fragment is in flight.
    """
    free = [p for p, s in enumerate(status) if not s.in_flight]
    if not free:
        return None
    stale = [p for p in free if status[p].staleness(step) >= sync_every]
    if stale:
        return max(stale, key=lambda p: (status[p].staleness(step), -p))
    never = [p for p in free if not status[p].sent]
    if never:
        return never[0]
    scores = {p: score(p) for p in free}
    return max(free, key=lambda p: (scores[p], -p))


@torch.no_grad()
def change_score(global_params: list[Tensor], worker_params: Sequence[list[Tensor]],
                 staleness: int, numel: int) -> float:
    """R_p summed over workers: Σ_m ‖θ̃_p − θ_{m,p}‖₁ / (I_p · |p|)."""
    total = 0.0
    for local in worker_params:
        total += region_change(global_params, local)
    return total / (max(1, staleness) * numel)


@torch.no_grad()
def region_change(global_params: list[Tensor], local: list[Tensor]) -> float:
    """One region's term of R_p's sum: ‖θ̃_p − θ_{m,p}‖₁."""
    return sum(float((g - loc.to(g.dtype)).abs().sum()) for g, loc in zip(global_params, local))
