"""Splitting a data set across workers, and long-tailed subsampling.

Schemes of :func:`partition`:

- ``iid``: a random permutation cut into near-equal shares.
- ``iid-repeated`` (ours, for scale tests with more workers than samples): every worker gets
  ``max(1, n // workers)`` samples of a random permutation repeated as often as needed, so
  shares are disjoint until the data runs out, then samples are reused.
- ``dirichlet``: label skew; for every class, shares over workers ~ Dir(alpha) (Hsu et al.,
  arXiv 1909.06335). Small alpha (0.1) gives each worker a few classes; large alpha tends to iid.
- ``label-pattern``: the USTC group's split-FL partition (``ymliao98/AdaSFL``):
  class c gives fraction ``p`` of its samples to worker ``c mod N`` and ``(1-p)/(N-1)`` to every
  other worker. Their ``data_pattern`` 1..4 are p = 0.2, 0.4, 0.6, 0.8.
- ``pathological``: each worker holds exactly ``classes_per_worker`` classes (1 or 2 in the
  split-FL reproductions; McMahan et al.'s "pathological non-IID", arXiv 1602.05629). Ours: the
  classes are dealt round-robin from a seeded class permutation (worker w gets positions
  ``w*k .. w*k+k-1`` modulo C, so its k classes differ), and every class is split evenly over the
  workers that hold it. Needs ``workers * k >= C`` so that every sample has a worker.
- ``unequal``: iid labels, unequal sizes (ours): worker shares follow an exponential profile
  from 1 down to ``1/rho`` (the largest worker holds ``rho`` times the smallest), assigned to
  workers in a seeded random order.
- ``long-tailed``: the data set is first subsampled to a long-tailed one with imbalance ratio
  ``rho`` (exp profile, :func:`long_tailed_indices`; class 0 is the head), which is then split
  iid over the workers (ours: every worker sees the same global long tail). Only the kept
  samples are assigned.

Every scheme guarantees each worker at least ``min_size`` samples (ours): a worker left short
takes random samples from the currently largest worker. This only acts in degenerate draws
(tiny alpha, p = 1 with more workers than classes).

:func:`long_tailed_indices` subsamples a balanced set into a long-tailed one (LDAM-DRW,
``kaidic/LDAM-DRW`` ``imbalance_cifar.py``; arXiv 2210.00136), for IMB-NAS.

All functions are deterministic for a given seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMES = ("iid", "iid-repeated", "dirichlet", "label-pattern", "unequal", "long-tailed",
           "pathological")
PROFILES = ("exp", "step")


@dataclass(frozen=True)
class Partition:
    """Which sample indices each worker holds.

    ``indices[w]`` are sorted indices into the labels given to :func:`partition`;
    ``histograms[w, c]`` counts worker w's samples of class c.
    """

    indices: list[np.ndarray]
    histograms: np.ndarray
    scheme: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def workers(self) -> int:
        return len(self.indices)

    def sizes(self) -> np.ndarray:
        """Number of samples per worker, shape ``[workers]``."""
        return self.histograms.sum(axis=1)

    def label_distributions(self) -> np.ndarray:
        """Each worker's label distribution, shape ``[workers, classes]``, rows summing to 1."""
        sizes = self.sizes()[:, None].astype(np.float64)
        return self.histograms / np.maximum(sizes, 1.0)


def partition(labels, workers: int, scheme: str, *, seed: int, alpha: float = 0.5,
              p: float = 0.8, rho: float = 10.0, min_size: int = 1,
              num_classes: int | None = None, classes_per_worker: int = 2) -> Partition:
    """Split the samples with ``labels`` (1-D ints) among ``workers`` by ``scheme``.

    ``alpha`` is the Dirichlet concentration (``dirichlet``), ``p`` the dominant-class share
    (``label-pattern``), ``classes_per_worker`` the classes of each worker (``pathological``),
    ``rho`` the largest/smallest size ratio (of workers for ``unequal``,
    of classes for ``long-tailed``). Every sample goes to exactly one worker (for
    ``long-tailed``: every kept sample); each worker gets at least ``min_size`` samples.
    ``num_classes`` defaults to ``max(labels) + 1``.
    """
    labels = _check_labels(labels)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    repeated = scheme == "iid-repeated"
    if min_size < 0 or (workers * min_size > len(labels) and not repeated):
        raise ValueError(f"cannot give {workers} workers at least {min_size} samples each "
                         f"from {len(labels)} samples")
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if classes <= int(labels.max()):
        raise ValueError(f"num_classes={num_classes} but labels go up to {int(labels.max())}")
    rng = np.random.default_rng(seed)

    if scheme == "iid":
        params: dict[str, Any] = {}
        shares = np.array_split(rng.permutation(len(labels)), workers)
    elif repeated:
        params = {}
        size = max(1, min_size, len(labels) // workers)
        shares = np.split(np.resize(rng.permutation(len(labels)), workers * size), workers)
    elif scheme == "dirichlet":
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        params = {"alpha": alpha}
        fractions = rng.dirichlet(np.full(workers, alpha), size=classes)
        shares = _split_classes(labels, fractions, rng)
    elif scheme == "label-pattern":
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        params = {"p": p}
        shares = _split_classes(labels, label_pattern_fractions(classes, workers, p), rng)
    elif scheme == "pathological":
        params = {"classes_per_worker": classes_per_worker}
        fractions = pathological_fractions(classes, workers, classes_per_worker, rng)
        shares = _split_classes(labels, fractions, rng)
    elif scheme == "long-tailed":
        if not rho >= 1.0:
            raise ValueError(f"rho must be >= 1, got {rho}")
        params = {"rho": rho, "profile": "exp"}
        kept = long_tailed_indices(labels, rho, seed=seed, profile="exp")
        if workers * min_size > len(kept):
            raise ValueError(f"cannot give {workers} workers at least {min_size} samples each "
                             f"from the {len(kept)} samples of the long tail (rho={rho:g})")
        shares = np.array_split(kept[rng.permutation(len(kept))], workers)
    else:
        if not rho >= 1.0:
            raise ValueError(f"rho must be >= 1, got {rho}")
        params = {"rho": rho}
        weights = _exp_profile(workers, rho)[rng.permutation(workers)]
        shares = _split_by_fractions(rng.permutation(len(labels)), weights / weights.sum())

    shares = _ensure_min_size([np.asarray(s, dtype=np.int64) for s in shares], min_size, rng)
    indices = [np.sort(s) for s in shares]
    histograms = np.stack([np.bincount(labels[s], minlength=classes) for s in indices])
    return Partition(indices=indices, histograms=histograms, scheme=scheme,
                     params={**params, "seed": seed, "workers": workers, "min_size": min_size})


def label_pattern_fractions(classes: int, workers: int, p: float) -> np.ndarray:
    """The USTC ``partition_sizes`` matrix ``[classes, workers]``: row c puts ``p`` on worker
    ``c mod N`` and ``(1-p)/(N-1)`` on the others (all of it on worker 0 when N = 1)."""
    if workers == 1:
        return np.ones((classes, 1))
    fractions = np.full((classes, workers), (1.0 - p) / (workers - 1))
    fractions[np.arange(classes), np.arange(classes) % workers] = p
    return fractions


def pathological_fractions(classes: int, workers: int, per_worker: int,
                           rng: np.random.Generator) -> np.ndarray:
    """``[classes, workers]`` shares of the ``pathological`` scheme: worker w holds the
    ``per_worker`` classes at positions ``w*k .. w*k+k-1`` (mod C) of a seeded class permutation;
    each class is shared equally by its holders."""
    if not 1 <= per_worker <= classes:
        raise ValueError(f"classes_per_worker must be in 1..{classes}, got {per_worker}")
    if workers * per_worker < classes:
        raise ValueError(f"{workers} workers x {per_worker} classes cannot cover {classes} "
                         f"classes")
    order = rng.permutation(classes)
    held = np.zeros((classes, workers))
    for w in range(workers):
        held[order[(w * per_worker + np.arange(per_worker)) % classes], w] = 1.0
    return held / held.sum(axis=1, keepdims=True)


def long_tailed_indices(labels, rho: float, seed: int, profile: str = "exp") -> np.ndarray:
    """Sorted indices of a long-tailed subsample of ``labels`` (LDAM-DRW).

    With n_max the size of the smallest class (so every class can supply its quota; for a
    balanced set this is the class size) and C classes, class c keeps
    ``n_c = floor(n_max * (1/rho)^(c/(C-1)))`` random samples (``exp``), or n_max for the first
    half of the classes and ``floor(n_max/rho)`` for the rest (``step``). At least one sample
    per class is kept. The largest/smallest class ratio is ``rho``.
    """
    labels = _check_labels(labels)
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if not rho >= 1.0:
        raise ValueError(f"rho must be >= 1, got {rho}")
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    classes = len(counts)
    if len(present) != classes:
        raise ValueError("every class from 0 to max(labels) needs at least one sample")
    n_max = int(counts.min())
    if profile == "exp":
        quota = np.floor(n_max * _exp_profile(classes, rho))
    else:
        quota = np.where(np.arange(classes) < classes // 2, n_max, np.floor(n_max / rho))
    quota = np.maximum(quota.astype(np.int64), 1)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(labels == c), size=quota[c], replace=False)
            for c in range(classes)]
    return np.sort(np.concatenate(keep))


def _check_labels(labels) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise ValueError("labels must be >= 0")
    return arr.astype(np.int64)


def _exp_profile(n: int, rho: float) -> np.ndarray:
    """(1/rho)^(i/(n-1)) for i = 0..n-1: from 1 down to 1/rho."""
    if n == 1:
        return np.ones(1)
    return (1.0 / rho) ** (np.arange(n) / (n - 1))


def _split_by_fractions(idx: np.ndarray, fractions: np.ndarray) -> list[np.ndarray]:
    """Cut ``idx`` into consecutive pieces of sizes ~ ``fractions * len(idx)``.

    Sizes are floors plus one extra sample for the largest remainders, so they sum exactly.
    """
    exact = fractions * len(idx)
    sizes = np.floor(exact).astype(np.int64)
    short = len(idx) - int(sizes.sum())
    if short > 0:
        sizes[np.argsort(-(exact - sizes), kind="stable")[:short]] += 1
    return np.split(idx, np.cumsum(sizes)[:-1])


def _split_classes(labels: np.ndarray, fractions: np.ndarray,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """Give worker w the share ``fractions[c, w]`` of each class c's (shuffled) samples."""
    workers = fractions.shape[1]
    shares: list[list[np.ndarray]] = [[] for _ in range(workers)]
    for c in range(fractions.shape[0]):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for w, piece in enumerate(_split_by_fractions(idx, fractions[c])):
            shares[w].append(piece)
    return [np.concatenate(s) if s else np.empty(0, dtype=np.int64) for s in shares]


def _ensure_min_size(shares: list[np.ndarray], min_size: int,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Top up every worker below ``min_size`` with random samples of the largest worker."""
    for w in range(len(shares)):
        while len(shares[w]) < min_size:
            donor = int(np.argmax([len(s) for s in shares]))
            need = min(min_size - len(shares[w]), len(shares[donor]) - min_size)
            pick = rng.choice(len(shares[donor]), size=need, replace=False)
            shares[w] = np.concatenate([shares[w], shares[donor][pick]])
            shares[donor] = np.delete(shares[donor], pick)
    return shares
