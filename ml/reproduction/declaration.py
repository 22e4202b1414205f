"""A reproduction, declared before it runs: claims, comparisons, metrics, targets, seeds, regimes.

Everything that decides a verdict lives here and is written into the results JSON next to the
measurements, so a reader can check that nothing was chosen after the runs: the comparison
(method against which baseline), the metric and its direction, the claimed lower bound, the
target and budget, the seeds, and the regimes with their settings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ml.reproduction.stats import Better, EffectKind


@dataclass(frozen=True)
class Arm:
    """One thing that is run: a row label, the registered method and its config overrides."""

    label: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """``method`` against ``baseline`` (arm labels) on ``metric``, at equal seeds and regime.

    ``claimed`` is the paper's lower bound as stated: points for a ``difference`` (with
    ``scale`` turning the metric into points, e.g. 100 for an accuracy in [0, 1]), the ratio for
    a ``ratio`` (1.36 for "1.36x faster", 1/0.79 for "21% less traffic").

    With ``reference`` set, the method is compared with that constant instead of an arm
    (``baseline`` then only names it), e.g. a rank correlation against 0.5.
    """

    method: str
    baseline: str
    metric: str
    kind: EffectKind
    better: Better
    claimed: float
    scale: float = 1.0
    reference: float | None = None
    units: str | None = None  # how a difference reads (default "points")

    @property
    def unit(self) -> str:
        return "x" if self.kind == "ratio" else (self.units or "points")


@dataclass(frozen=True)
class Claim:
    """One headline claim of a paper: its text and the comparisons that must all support it."""

    key: str
    text: str
    comparisons: tuple[Comparison, ...]


@dataclass(frozen=True)
class Regime:
    """One condition of the sweep: a key, a short label and the settings it changes."""

    key: str
    label: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Declaration:
    """A paper's reproduction: fixed before any run, stored with the results."""

    key: str  # file stem of the results: docs/reproductions/<key>.json
    paper: str
    arxiv: str
    setting: str  # what is trained on what, in one paragraph
    claims: tuple[Claim, ...]
    arms: tuple[Arm, ...]
    regimes: tuple[Regime, ...]
    headline: str  # key of the regime the dashboard launches and the docs lead with
    seeds: tuple[int, ...]
    target: dict[str, Any]  # e.g. {"accuracy": 0.9, "budget_s": 40}
    differences: tuple[str, ...] = ()  # what differs from the paper
    launch: dict[str, Any] = field(default_factory=dict)  # the headline regime as an experiment
    #: Declarations are never edited after their runs: a new one gets a new ``key`` and version
    #: and names the results it replaces (their file stems) with why; those stay, marked.
    version: int = 1
    supersedes: dict[str, str] = field(default_factory=dict)
    #: More regimes under an earlier declaration's rules (whose file stays unedited): the
    #: extended results' file stem -> what is shared and what is added. The docs place this
    #: section right after that one.
    extends: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = {a.label for a in self.arms}
        if len(labels) != len(self.arms):
            raise ValueError("arm labels must be unique")
        for claim in self.claims:
            for c in claim.comparisons:
                missing = {c.method} - labels if c.reference is not None else \
                    {c.method, c.baseline} - labels
                if missing:
                    raise ValueError(f"claim {claim.key}: unknown arm(s) {sorted(missing)}")
        keys = [r.key for r in self.regimes]
        if len(set(keys)) != len(keys):
            raise ValueError("regime keys must be unique")
        if self.headline not in keys:
            raise ValueError(f"headline regime {self.headline!r} is not declared")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        if self.key in self.extends or set(self.extends) & set(self.supersedes):
            raise ValueError("a declaration extends other, unsuperseded declarations")

    def regime(self, key: str) -> Regime:
        return next(r for r in self.regimes if r.key == key)

    def arm(self, label: str) -> Arm:
        return next(a for a in self.arms if a.label == label)

    def as_dict(self) -> dict:
        return asdict(self)
