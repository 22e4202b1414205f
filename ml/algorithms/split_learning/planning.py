"""How AdaSFL's and MergeSFL's server plans a round: who trains, with which batch sizes.

Pure numpy, no torch: label-distribution divergences, batch-size regulation, the genetic
worker selection of MergeSFL, and the two methods' planners (:func:`adasfl_planner`,
:func:`mergesfl_planner`). ParallelSFL's clustering is in :mod:`.clustering`. The formulas are ours
where the method notes (docs/methods/mergesfl.md, parallelsfl.md) tag them [I]:

- The per-iteration time of worker i with batch b is ``fixed_i + b * per_sample_i`` (compute of
  the bottom forward and backward, feature upload and gradient download all scale with b; the
  link latency does not). The time the server spends on the top model is the same for every
  worker, so it plays no part in equalising them.
- :func:`regulate_batch_sizes` solves ``min max_i t_i(b_i)`` subject to ``sum b_i = total`` and
  ``b_min <= b_i <= b_max`` by water-filling (an exact solve for the common time, then integer
  rounding that keeps the maximum smallest). AdaSFL's own rule ``b_i = (t_min / t_i) * B`` is the
  same idea without bounds or a fixed total.
- :func:`select_workers_ga` scores a subset S by ``KL(P_merge || U) + mu * T(S) / T_ref``, where
  ``P_merge`` weighs each member's label distribution by its regulated batch size and ``T(S)`` is
  the slowest member's regulated iteration time; ``T_ref`` (ours) is the median worker's time for
  an even share of the total batch, which makes ``mu`` unit-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ml.algorithms.split_learning.config import AdaSFLConfig, MergeSFLConfig
from ml.fl.sampling import participants_count
from ml.method_run import derive_seed

#: Probability floor used inside KL so that an absent class gives a large but finite value.
KL_EPS = 1e-8


def label_distribution(histogram: np.ndarray) -> np.ndarray:
    """Normalise a label histogram (counts per class) to a distribution; zeros stay uniform."""
    hist = np.asarray(histogram, dtype=np.float64)
    total = hist.sum()
    if total <= 0:
        return np.full(hist.shape, 1.0 / hist.size)
    return hist / total


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats for two distributions over the same classes."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], KL_EPS))))


def kl_to_uniform(p: np.ndarray) -> float:
    """KL(p || uniform): how far a label distribution (or histogram, normalised here) is from
    IID; 0 when balanced."""
    p = label_distribution(p)
    return kl_divergence(p, np.full(p.shape, 1.0 / p.size))


def merged_distribution(distributions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Label distribution of a merged batch: rows of ``distributions`` mixed by ``weights``."""
    dist = np.asarray(distributions, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    return (w[:, None] * dist).sum(axis=0) / max(w.sum(), KL_EPS)


@dataclass(frozen=True)
class IterationCost:
    """Per-worker emulated cost of one split-learning iteration, linear in the batch size.

    ``per_sample_s[i]``: seconds per sample on worker i (bottom forward+backward compute, feature
    upload, gradient download). ``fixed_s[i]``: seconds independent of the batch (link latency).
    """

    per_sample_s: np.ndarray
    fixed_s: np.ndarray

    def __post_init__(self):
        if np.any(np.asarray(self.per_sample_s) <= 0):
            raise ValueError("per-sample times must be positive")

    def times(self, batch_sizes: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
        """Iteration time of each worker (of ``members``, if given) at ``batch_sizes``."""
        idx = slice(None) if members is None else np.asarray(members)
        sizes = np.asarray(batch_sizes, dtype=np.float64)
        return self.fixed_s[idx] + sizes * self.per_sample_s[idx]

    def subset(self, members: np.ndarray) -> "IterationCost":
        members = np.asarray(members)
        return IterationCost(self.per_sample_s[members], self.fixed_s[members])


def uniform_batch_sizes(n: int, total: int) -> np.ndarray:
    """``total`` split as evenly as integers allow among ``n`` workers (the unregulated case)."""
    base = np.full(n, total // n, dtype=np.int64)
    base[: total % n] += 1
    return base


def regulate_batch_sizes(cost: IterationCost, total: int, b_min: int, b_max: int) -> np.ndarray:
    """Integer batch sizes that equalise iteration times, summing to ``total`` within bounds.

    Minimises the slowest worker's time: the continuous optimum gives every unclipped worker the
    same time T (solved exactly on the piecewise-linear sum), then the fractional parts are
    handed out one sample at a time to the workers whose time grows least.
    """
    per = np.asarray(cost.per_sample_s, dtype=np.float64)
    fixed = np.asarray(cost.fixed_s, dtype=np.float64)
    n = per.size
    if not 1 <= b_min <= b_max:
        raise ValueError(f"need 1 <= b_min <= b_max, got {b_min}, {b_max}")
    if not n * b_min <= total <= n * b_max:
        raise ValueError(f"total batch {total} cannot be split among {n} workers within "
                         f"[{b_min}, {b_max}]")

    def sizes_at(t: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(t)[..., None] - fixed) / per, b_min, b_max)

    # sum_i b_i(T) is piecewise linear in T with kinks where a worker hits a bound: find the
    # segment holding ``total`` and solve on it exactly.
    kinks = np.sort(np.concatenate([fixed + b_min * per, fixed + b_max * per]))
    sums = sizes_at(kinks).sum(axis=-1)
    k = int(np.searchsorted(sums, total))
    if k == 0:
        level = kinks[0]
    else:
        t0, t1, s0, s1 = kinks[k - 1], kinks[k], sums[k - 1], sums[k]
        level = t1 if s1 == s0 else t0 + (total - s0) * (t1 - t0) / (s1 - s0)
    hi = level
    sizes = np.floor(sizes_at(hi) + 1e-9).astype(np.int64)
    sizes = np.clip(sizes, b_min, b_max)
    # Integer repair: add to the worker whose next sample costs least, or take from the slowest.
    while sizes.sum() < total:
        after = np.where(sizes < b_max, fixed + (sizes + 1) * per, np.inf)
        sizes[int(np.argmin(after))] += 1
    while sizes.sum() > total:
        now = np.where(sizes > b_min, fixed + sizes * per, -np.inf)
        sizes[int(np.argmax(now))] -= 1
    return sizes


@dataclass(frozen=True)
class Selection:
    """The workers chosen for a round and their batch sizes (aligned with ``members``)."""

    members: np.ndarray
    batch_sizes: np.ndarray
    kl: float
    iteration_time_s: float
    objective: float


def evaluate_selection(members: np.ndarray, distributions: np.ndarray, cost: IterationCost,
                       total: int, b_min: int, b_max: int, mu: float, t_ref: float,
                       regulate: bool = True) -> Selection:
    """Batch sizes, merged-distribution KL, slowest time and objective of one worker subset."""
    members = np.sort(np.asarray(members, dtype=np.int64))
    sub = cost.subset(members)
    if regulate:
        sizes = regulate_batch_sizes(sub, total, b_min, b_max)
    else:
        sizes = uniform_batch_sizes(members.size, total)
    kl = kl_to_uniform(merged_distribution(distributions[members], sizes))
    slowest = float(sub.times(sizes).max())
    return Selection(members, sizes, kl, slowest, kl + mu * slowest / t_ref)


def select_workers_ga(distributions: np.ndarray, cost: IterationCost, n_select: int, total: int,
                      b_min: int, b_max: int, mu: float, rng: np.random.Generator, *,
                      regulate: bool = True, population: int = 24, generations: int = 30,
                      mutation_rate: float = 0.3) -> Selection:
    """MergeSFL's control: a genetic algorithm over worker subsets of size ``n_select``.

    A chromosome is a subset; fitness is the negated objective of :func:`evaluate_selection`
    (so batch sizes are optimised jointly with the subset). Tournament selection, crossover that
    keeps the parents' common members and fills from either parent, swap mutation, elitism.
    """
    pool = np.arange(distributions.shape[0])
    n_select = min(n_select, pool.size)
    # Typical worker's time on an even share: makes ``mu`` unit-free (ours).
    t_ref = float(np.median(cost.fixed_s) + total / n_select * np.median(cost.per_sample_s))
    cache: dict[tuple[int, ...], Selection] = {}

    def score(members: np.ndarray) -> Selection:
        key = tuple(sorted(int(m) for m in members))
        if key not in cache:
            cache[key] = evaluate_selection(np.array(key), distributions, cost, total, b_min,
                                            b_max, mu, t_ref, regulate)
        return cache[key]

    if n_select == pool.size:
        return score(pool)

    def random_member() -> np.ndarray:
        return rng.choice(pool, size=n_select, replace=False)

    def crossover(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        common = np.intersect1d(a, b)
        rest = np.setdiff1d(np.union1d(a, b), common)
        fill = rng.choice(rest, size=n_select - common.size, replace=False)
        return np.concatenate([common, fill])

    def mutate(c: np.ndarray) -> np.ndarray:
        if rng.random() >= mutation_rate:
            return c
        outside = np.setdiff1d(pool, c)
        c = c.copy()
        c[rng.integers(c.size)] = outside[rng.integers(outside.size)]
        return c

    def tournament(pop: list[np.ndarray]) -> np.ndarray:
        i, j = rng.integers(len(pop), size=2)
        return pop[i] if score(pop[i]).objective <= score(pop[j]).objective else pop[j]

    pop = [random_member() for _ in range(population)]
    best = min((score(c) for c in pop), key=lambda s: s.objective)
    for _ in range(generations):
        children = [best.members]  # elitism
        while len(children) < population:
            children.append(mutate(crossover(tournament(pop), tournament(pop))))
        pop = children
        gen_best = min((score(c) for c in pop), key=lambda s: s.objective)
        if gen_best.objective < best.objective:
            best = gen_best
    return best


# -- the planners ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundPlan:
    """Who trains this round and with which batch sizes (aligned arrays)."""

    members: np.ndarray
    batch_sizes: np.ndarray


@dataclass(frozen=True)
class PlanningInputs:
    """What the server knows when it plans a round (the paper's worker state monitoring)."""

    distributions: np.ndarray  # label distribution per worker
    cost: IterationCost  # every worker's iteration time model against the server
    num_workers: int


Planner = Callable[[int, PlanningInputs], RoundPlan]


def plan_sizes(cost: IterationCost, total: int, config: AdaSFLConfig) -> np.ndarray:
    """Regulated (or, with regulation off, equal) batch sizes summing to ``total``."""
    if config.batch_regulation:
        return regulate_batch_sizes(cost, total, config.min_batch_size, config.max_batch_size)
    return uniform_batch_sizes(len(cost.per_sample_s), total)


def adasfl_planner(config: AdaSFLConfig) -> Planner:
    """AdaSFL: every worker (or ``clients_per_round`` of them drawn uniformly at random, ours:
    equal participation against MergeSFL), batch sizes regulated to equalise iteration times."""

    def planner(step: int, inputs: PlanningInputs) -> RoundPlan:
        n = participants_count(config.clients_per_round, inputs.num_workers)
        if n == inputs.num_workers:
            everyone = np.arange(inputs.num_workers)
            return RoundPlan(everyone, plan_sizes(inputs.cost, config.batch_size * n, config))
        rng = np.random.default_rng(derive_seed(config.seed, "selection", step))
        members = np.sort(rng.choice(inputs.num_workers, size=n, replace=False))
        return RoundPlan(members, plan_sizes(inputs.cost.subset(members),
                                             config.batch_size * n, config))

    return planner


def mergesfl_planner(config: MergeSFLConfig) -> Planner:
    """MergeSFL's control module: a round's participants (genetic or random selection) and
    their batch sizes."""

    def planner(step: int, inputs: PlanningInputs) -> RoundPlan:
        n = participants_count(config.clients_per_round, inputs.num_workers)
        total = config.batch_size * n
        rng = np.random.default_rng(derive_seed(config.seed, "selection", step))
        if config.worker_selection == "random" or n == inputs.num_workers:
            members = np.sort(rng.choice(inputs.num_workers, size=n, replace=False))
            return RoundPlan(members, plan_sizes(inputs.cost.subset(members), total, config))
        best = select_workers_ga(
            inputs.distributions, inputs.cost, n, total, config.min_batch_size,
            config.max_batch_size, config.mu, rng, regulate=config.batch_regulation,
            population=config.ga_population, generations=config.ga_generations)
        return RoundPlan(best.members, best.batch_sizes)

    return planner
