"""The rule that turns a paired-effect interval into a verdict, fixed before any run.

- ``holds``: the interval excludes zero on the method's side and the mean effect reaches the
  claimed lower bound;
- ``weaker``: the interval excludes zero on the method's side, but the mean effect is smaller
  than claimed;
- ``not shown``: the interval includes zero;
- ``reversed``: the interval excludes zero on the baseline's side.

A claim with several comparisons (a method against each baseline) gets the weakest of their
verdicts: "better than the baselines" must hold against each of them.
"""
from __future__ import annotations

from typing import Literal, Sequence

from ml.reproduction.stats import Interval

Verdict = Literal["holds", "weaker", "not shown", "reversed"]

#: Verdicts from strongest to weakest.
ORDER: tuple[Verdict, ...] = ("holds", "weaker", "not shown", "reversed")


def verdict(effect: Interval, claimed_bound: float) -> Verdict:
    """The verdict of one comparison; ``effect`` and ``claimed_bound`` in effect units
    (positive = the method is better)."""
    if effect.low > 0:
        return "holds" if effect.mean >= claimed_bound else "weaker"
    if effect.high < 0:
        return "reversed"
    return "not shown"


def weakest(verdicts: Sequence[Verdict]) -> Verdict:
    """The weakest of several verdicts (``not shown`` for none)."""
    if not verdicts:
        return "not shown"
    return max(verdicts, key=ORDER.index)


def strongest(verdicts: Sequence[Verdict]) -> Verdict:
    """The strongest of several verdicts (``not shown`` for none)."""
    if not verdicts:
        return "not shown"
    return min(verdicts, key=ORDER.index)
