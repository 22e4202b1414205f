"""Paired effects and their 95% confidence intervals.

A comparison measures the method and its baseline on the same seeds (same initialisation,
sampling and partition draw), so the unit of analysis is the per-seed difference. Its mean gets
a Student t-interval (n - 1 degrees of freedom): with the handful of seeds a CPU bench affords,
the t quantile, not the normal one, is what keeps the coverage honest.

Effects are oriented so that **positive means the method is better**:

- ``difference`` (accuracy, in points): ``scale * (method - baseline)`` where higher is better,
  ``scale * (baseline - method)`` where lower is better;
- ``ratio`` (time or traffic to a target, speed-ups): the paired log ratio
  ``log(baseline / method)`` where lower is better (``log(method / baseline)`` where higher is),
  so a 1.36x speed-up is ``log 1.36`` and the interval maps back to ratios with ``exp``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

from scipy import stats

EffectKind = Literal["difference", "ratio"]
Better = Literal["higher", "lower"]

#: Two-sided confidence level of every interval the harness reports.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of the paired effects and its confidence interval, in effect units."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Student t-interval of the mean of ``values`` (at least one; one value gives an unbounded
    interval, since its spread is unknown)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("a confidence interval needs at least one value")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_effects(method: Sequence[float], baseline: Sequence[float], kind: EffectKind,
                   better: Better, scale: float = 1.0) -> list[float]:
    """Per-seed effects of ``method`` over ``baseline`` (aligned by seed), positive = better."""
    if len(method) != len(baseline):
        raise ValueError(f"paired samples differ in length: {len(method)} and {len(baseline)}")
    sign = 1.0 if better == "higher" else -1.0
    if kind == "difference":
        return [sign * scale * (m - b) for m, b in zip(method, baseline)]
    if any(v <= 0 for v in [*method, *baseline]):
        raise ValueError("a ratio effect needs positive measurements")
    return [sign * math.log(m / b) for m, b in zip(method, baseline)]


def display(value: float, kind: EffectKind) -> float:
    """An effect in the units people read: points for differences, the ratio (x) for ratios."""
    return math.exp(value) if kind == "ratio" else value


def to_effect_units(claimed: float, kind: EffectKind) -> float:
    """A claimed bound as stated (points, or a ratio such as 1.36) in effect units."""
    return math.log(claimed) if kind == "ratio" else claimed
