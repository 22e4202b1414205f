"""S-UCB: a smooth UCB bandit over the continuous (pruning ratio, LoRA rank) square.

FedSpine (arXiv 2501.02438), per third-party summaries: S-UCB partitions the continuous space
and refines it progressively, balancing observed reward against uncertainty. The exact update is
unknown; ours is HOO (hierarchical optimistic optimisation, Bubeck et al. 2011), a smooth UCB on
a binary tree of boxes over ``[0, 1]²``:

- every node keeps its pull count n and mean reward μ; its optimistic value is
  ``U = μ + c·sqrt(2·ln t / n) + L·diam`` (``L·diam`` is the smoothness allowance: rewards
  vary by at most L per unit of distance); an unvisited node counts as one pull at its
  parent's mean (ours; HOO gives it +inf, too exploratory for a few dozen pulls);
- ``B(node) = min(U, max(B(left), B(right)))``; a pull descends from the root to the child of
  larger B, plays a point of the leaf it reaches and splits that leaf in two along its longer
  side, so the partition grows finest around good arms (zooming);
- the played point is the leaf's centre plus a small jitter within it.

The caller maps the unit square to its ranges (:meth:`SmoothUCB.to_arm`). No device speed is
known to the bandit: it only sees the rewards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Node:
    lo: np.ndarray
    hi: np.ndarray
    depth: int
    n: int = 0
    total: float = 0.0
    children: list["_Node"] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def diam(self) -> float:
        return float(np.linalg.norm(self.hi - self.lo))

    def split(self) -> None:
        axis = int(np.argmax(self.hi - self.lo))
        mid = (self.lo[axis] + self.hi[axis]) / 2
        left_hi, right_lo = self.hi.copy(), self.lo.copy()
        left_hi[axis], right_lo[axis] = mid, mid
        self.children = [_Node(self.lo.copy(), left_hi, self.depth + 1),
                         _Node(right_lo, self.hi.copy(), self.depth + 1)]


class SmoothUCB:
    """HOO over ``[0, 1]²``: :meth:`select` a point, then :meth:`update` it with its reward."""

    def __init__(self, c: float = 0.1, smoothness: float = 0.1, jitter: float = 0.5,
                 max_depth: int = 12, split_after: int = 1, seed: int = 0):
        self.c, self.smoothness, self.jitter, self.max_depth = c, smoothness, jitter, max_depth
        self.split_after = split_after
        self.root = _Node(np.zeros(2), np.ones(2), 0)
        self.t = 0
        self.rng = np.random.default_rng(seed)
        self._path: list[_Node] | None = None
        self.history: list[tuple[np.ndarray, float]] = []

    def _u(self, node: _Node, prior: float) -> float:
        # An unvisited child starts from its parent's mean as one virtual pull (ours): with a
        # handful of rounds per client, HOO's +inf would spend every pull on new boxes.
        n, mean = (node.n, node.mean) if node.n else (1, prior)
        return (mean + self.c * math.sqrt(2 * math.log(max(self.t, 2)) / n)
                + self.smoothness * node.diam)

    def _b(self, node: _Node, prior: float) -> float:
        if self.root is node and node.n == 0:
            return math.inf
        u = self._u(node, prior)
        if not node.children:
            return u
        mean = node.mean if node.n else prior
        return min(u, max(self._b(ch, mean) for ch in node.children))

    def select(self) -> np.ndarray:
        """The next point to play, in ``[0, 1]²``."""
        node, path = self.root, [self.root]
        while node.children:
            scores = [self._b(ch, node.mean) for ch in node.children]
            best = [i for i, s in enumerate(scores) if s == max(scores)]
            node = node.children[best[int(self.rng.integers(len(best)))]]
            path.append(node)
        self._path = path
        centre = (node.lo + node.hi) / 2
        half = (node.hi - node.lo) / 2
        return np.clip(centre + self.jitter * half * self.rng.uniform(-1, 1, size=2), 0.0, 1.0)

    def update(self, point: np.ndarray, reward: float) -> None:
        """Credit ``reward`` to the nodes on the path of the last :meth:`select`."""
        if self._path is None:
            raise RuntimeError("update() without a select()")
        self.t += 1
        for node in self._path:
            node.n += 1
            node.total += float(reward)
        leaf = self._path[-1]
        if leaf.depth < self.max_depth and leaf.n >= self.split_after:
            leaf.split()
        self._path = None
        self.history.append((np.asarray(point, dtype=float), float(reward)))

    def best_point(self) -> np.ndarray:
        """Centre of the most-pulled leaf path (what the bandit believes best)."""
        node = self.root
        while node.children and any(ch.n for ch in node.children):
            node = max(node.children, key=lambda ch: (ch.n, ch.mean))
        return (node.lo + node.hi) / 2

    @staticmethod
    def to_arm(point: np.ndarray, ratio_range: tuple[float, float],
               rank_range: tuple[int, int]) -> tuple[float, int]:
        """Map a unit point to ``(pruning ratio, integer LoRA rank)``."""
        ratio = ratio_range[0] + float(point[0]) * (ratio_range[1] - ratio_range[0])
        rank = int(round(rank_range[0] + float(point[1]) * (rank_range[1] - rank_range[0])))
        return ratio, rank


def reward(loss_before: float, loss_after: float, sparsity_gain: float, time_s: float,
           others_time_s: float, update_share: float, beta: float = 1.0, gamma: float = 0.05,
           lam: float = 0.5) -> float:
    """One client's reward for its arm this round (ours; FedSpine names the terms, not the form).

    ``(L_before − L_after)/L_before`` (relative local-loss improvement on the client's probe
    batch) ``+ β·Δsparsity`` (pruning progress) ``+ γ·(update_share − 1)`` (the client's LoRA
    update norm relative to the mean) ``− λ·T_i / mean_{j≠i} T_j`` (completion time relative to
    the *other* clients: with itself in the mean, a straggler's ratio would barely depend on its
    own arm). Additive rather than divided by the time ratio so that a negative loss change
    cannot turn slowness into a bonus.
    """
    improvement = (loss_before - loss_after) / max(loss_before, 1e-8)
    return (improvement + beta * sparsity_gain + gamma * (update_share - 1.0)
            - lam * time_s / max(others_time_s, 1e-12))
