"""Searching the adapted supernet for the best subnet (IMB-NAS step 4).

Every candidate subnet is scored by its **balanced top-1 accuracy on the balanced validation
split of the target**, using the supernet's (adapted) head, with the inherited weights (no
training during the search). Candidates must fit a FLOPs budget: at most ``max_flops_fraction``
of the largest subnet's forward FLOPs (ours, [I]: OFA/BigNAS search under an efficiency
constraint; without one the largest subnet would nearly always win).

- **Evolutionary** (OFA's, simplified; settings ours): a random initial population, then each
  generation keeps the ``parents`` best and fills the population with children, half by mutation
  of a parent, half by crossover of two parents followed by mutation.
- **Random**: as many distinct random subnets as the evolutionary search would evaluate.

Scores are cached per subnet, so each distinct subnet is evaluated once. Ties are broken towards
fewer FLOPs, then by the subnet's label, so the search is deterministic for a seed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ml.algorithms.neural_architecture_search.supernet import Arch, SearchSpace

SearchKind = Literal["evolutionary", "random"]

#: Attempts to draw a subnet that satisfies the constraint before giving up.
MAX_DRAWS = 1000


@dataclass
class SearchResult:
    """The best subnet, its validation score, and every (subnet, score) evaluated in order."""

    best: Arch
    score: float
    history: list[tuple[Arch, float]] = field(default_factory=list)

    @property
    def evaluations(self) -> int:
        return len(self.history)


class _Scorer:
    """Scores subnets once each and remembers the evaluation order."""

    def __init__(self, score_fn: Callable[[Arch], float], cost_fn: Callable[[Arch], float]):
        self.score_fn = score_fn
        self.cost_fn = cost_fn
        self.scores: dict[Arch, float] = {}
        self.history: list[tuple[Arch, float]] = []

    def __call__(self, arch: Arch) -> float:
        if arch not in self.scores:
            score = float(self.score_fn(arch))
            self.scores[arch] = score
            self.history.append((arch, score))
        return self.scores[arch]

    def rank_key(self, arch: Arch) -> tuple:
        return (-self.scores[arch], self.cost_fn(arch), arch.label)

    def best(self) -> SearchResult:
        best = min(self.scores, key=self.rank_key)
        return SearchResult(best=best, score=self.scores[best], history=list(self.history))


def _draw(make: Callable[[], Arch], allowed: Callable[[Arch], bool],
          exclude: set[Arch]) -> Arch | None:
    for _ in range(MAX_DRAWS):
        arch = make()
        if allowed(arch) and arch not in exclude:
            return arch
    return None


def evolutionary_search(space: SearchSpace, score_fn: Callable[[Arch], float],
                        rng: np.random.Generator, *, allowed: Callable[[Arch], bool],
                        cost_fn: Callable[[Arch], float], population: int = 16,
                        generations: int = 4, parents: int = 4, mutation_prob: float = 0.3,
                        on_generation: Callable[[int, SearchResult], None] | None = None
                        ) -> SearchResult:
    """Evolve subnets of ``space`` that satisfy ``allowed``, maximising ``score_fn``.

    Evaluates ``population`` subnets, then ``population - parents`` new ones per generation
    (fewer when the space runs out of distinct allowed subnets). ``on_generation(g, best)`` is
    called after the initial population (g = 0) and after each generation.
    """
    if not 1 <= parents <= population:
        raise ValueError(f"need 1 <= parents <= population, got {parents}, {population}")
    scorer = _Scorer(score_fn, cost_fn)
    current: list[Arch] = []
    for _ in range(population):
        arch = _draw(lambda: space.sample(rng), allowed, set(current))
        if arch is None:
            break
        current.append(arch)
    if not current:
        raise ValueError("no subnet of the search space satisfies the constraint")
    for arch in current:
        scorer(arch)
    if on_generation is not None:
        on_generation(0, scorer.best())
    for generation in range(1, generations + 1):
        elite = sorted(current, key=scorer.rank_key)[:parents]
        children: list[Arch] = []
        seen = set(scorer.scores)
        for i in range(population - len(elite)):
            if i % 2 == 0:
                def make() -> Arch:
                    return space.mutate(elite[int(rng.integers(len(elite)))], rng, mutation_prob)
            else:
                def make() -> Arch:
                    a, b = (elite[int(j)] for j in rng.integers(len(elite), size=2))
                    return space.mutate(space.crossover(a, b, rng), rng, mutation_prob)
            child = _draw(make, allowed, seen)
            if child is None:
                break
            seen.add(child)
            children.append(child)
        for child in children:
            scorer(child)
        current = elite + children
        if on_generation is not None:
            on_generation(generation, scorer.best())
    return scorer.best()


def random_search(space: SearchSpace, score_fn: Callable[[Arch], float],
                  rng: np.random.Generator, *, allowed: Callable[[Arch], bool],
                  cost_fn: Callable[[Arch], float], evaluations: int,
                  on_generation: Callable[[int, SearchResult], None] | None = None
                  ) -> SearchResult:
    """Score ``evaluations`` distinct random subnets that satisfy ``allowed``; keep the best."""
    scorer = _Scorer(score_fn, cost_fn)
    for _ in range(evaluations):
        arch = _draw(lambda: space.sample(rng), allowed, set(scorer.scores))
        if arch is None:
            break
        scorer(arch)
    if not scorer.scores:
        raise ValueError("no subnet of the search space satisfies the constraint")
    result = scorer.best()
    if on_generation is not None:
        on_generation(0, result)
    return result


def search(kind: SearchKind, space: SearchSpace, score_fn: Callable[[Arch], float],
           rng: np.random.Generator, *, allowed: Callable[[Arch], bool],
           cost_fn: Callable[[Arch], float], population: int, generations: int, parents: int,
           mutation_prob: float,
           on_generation: Callable[[int, SearchResult], None] | None = None) -> SearchResult:
    """Run the ``kind`` search; random search gets the evolutionary search's evaluation budget."""
    if kind == "evolutionary":
        return evolutionary_search(space, score_fn, rng, allowed=allowed, cost_fn=cost_fn,
                                   population=population, generations=generations,
                                   parents=parents, mutation_prob=mutation_prob,
                                   on_generation=on_generation)
    if kind == "random":
        budget = population + generations * (population - parents)
        return random_search(space, score_fn, rng, allowed=allowed, cost_fn=cost_fn,
                             evaluations=budget, on_generation=on_generation)
    raise ValueError(f"unknown search kind {kind!r}")
