"""Reading a run's accuracy curve: the time (and traffic) at which it first reaches a target.

Evaluations come every round; between two of them the crossing is placed by linear
interpolation of accuracy against emulated time (and traffic against time), so the time to
target resolves finer than a round. A run that never reaches the target within the budget is
*censored*: its time is the budget (a lower bound) and the record says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Crossing:
    """When a curve first reached the target: time, traffic then, and whether it did at all."""

    time_s: float
    traffic: float
    censored: bool


def first_crossing(times: Sequence[float], accuracy: Sequence[float], traffic: Sequence[float],
                   target: float, budget_s: float) -> Crossing:
    """Interpolated first crossing of ``target`` by ``accuracy`` (aligned with ``times`` and the
    cumulative ``traffic``); the curve starts at time 0 with no traffic and no accuracy gain."""
    prev_t, prev_a, prev_b = 0.0, None, 0.0
    for t, a, b in zip(times, accuracy, traffic):
        if t > budget_s:
            break
        if a >= target:
            if prev_a is None or a == prev_a:
                return Crossing(t, b, False)
            frac = (target - prev_a) / (a - prev_a)
            return Crossing(prev_t + frac * (t - prev_t), prev_b + frac * (b - prev_b), False)
        prev_t, prev_a, prev_b = t, a, b
    return Crossing(budget_s, prev_b, True)


def value_at(times: Sequence[float], values: Sequence[float], at_s: float) -> float | None:
    """The last value measured at or before ``at_s`` (None before the first)."""
    last = None
    for t, v in zip(times, values):
        if t > at_s:
            break
        last = v
    return last
