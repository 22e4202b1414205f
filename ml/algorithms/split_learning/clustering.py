"""ParallelSFL's clusters: how workers are grouped, each group's top worker and local updating
frequency (arXiv 2410.01256; the method text was not available, the formulas are ours [I]).

- :func:`cluster_workers` maximises ``sum_C -(n_C / mean n) KL(P_C || U) - beta * (max_C t -
  min_C t) / mean t`` with ``mean t`` over all workers and the KL weighted by the cluster's data
  n_C (both ours), by local search (moves and swaps) from speed-sorted groups (ours).
- :func:`choose_top_worker`: the member that, as the hub, gives the shortest iteration.
- :func:`local_frequencies`: tau_k ~ 1 / T_k so that every cluster fills the same round time.
"""
from __future__ import annotations

import numpy as np

from ml.algorithms.split_learning.planning import kl_to_uniform, uniform_batch_sizes
from ml.algorithms.split_learning.training import SplitCosts, merged_iteration_time
from ml.testbed.emulator import EmulatedDevice, Testbed


def cluster_utility(members: np.ndarray, histograms: np.ndarray, iter_times: np.ndarray,
                    beta: float, mean_time: float, mean_data: float) -> float:
    """U(C) = -(n_C / mean n) * KL(P_C || U) - beta * (max_C t - min_C t) / mean t.

    P_C is the cluster's label distribution (members' histograms summed). The KL term is weighted
    by the cluster's share of the data relative to an average cluster (ours; the plain reconstructed
    utility when clusters hold equal data), so that the sum over clusters measures how far the
    average *sample's* cluster is from IID: unweighted, a sum of KLs is smallest when all the
    skewed workers are packed into one cluster and the others are left near-IID but nearly empty.
    """
    members = np.asarray(members)
    counts = np.asarray(histograms, dtype=np.float64)[members].sum(axis=0)
    spread = float(iter_times[members].max() - iter_times[members].min()) / mean_time
    return -counts.sum() / mean_data * kl_to_uniform(counts) - beta * spread


def clustering_utility(assignment: np.ndarray, n_clusters: int, histograms: np.ndarray,
                       iter_times: np.ndarray, beta: float) -> float:
    """Sum of :func:`cluster_utility` over the clusters of ``assignment`` (a cluster id per
    worker)."""
    mean_time = float(np.mean(iter_times))
    mean_data = float(np.sum(histograms)) / n_clusters
    return sum(cluster_utility(np.flatnonzero(assignment == k), histograms, iter_times, beta,
                               mean_time, mean_data) for k in range(n_clusters))


def _cluster_sizes(n_workers: int, n_clusters: int) -> np.ndarray:
    return uniform_batch_sizes(n_clusters, n_workers)


def random_clusters(n_workers: int, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Ablation: workers dealt at random into ``n_clusters`` groups of (near) equal size."""
    labels = np.repeat(np.arange(n_clusters), _cluster_sizes(n_workers, n_clusters))
    return rng.permutation(labels)


def cluster_workers(histograms: np.ndarray, iter_times: np.ndarray, n_clusters: int, beta: float,
                    rng: np.random.Generator, *, min_size: int = 1, max_size: int | None = None,
                    max_passes: int = 50, anchors: list[int] | None = None) -> np.ndarray:
    """ParallelSFL's clustering: a cluster id per worker maximising :func:`clustering_utility`.

    Starts from groups of similar speed (workers sorted by iteration time, cut into equal runs),
    then improves by best-improvement local search over single moves (within the size bounds) and
    pairwise swaps until no step helps. ``rng`` only breaks ties in the visiting order.
    ``anchors`` (one worker index per cluster, optional) pins worker ``anchors[k]`` to cluster
    k: it starts there and never moves (ParallelSFL's ``top_worker="fastest"``).
    """
    hist = np.asarray(histograms, dtype=np.float64)
    times = np.asarray(iter_times, dtype=np.float64)
    n = hist.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"cannot make {n_clusters} clusters of {n} workers")
    max_size = n if max_size is None else max_size
    if n_clusters * min_size > n or n_clusters * max_size < n:
        raise ValueError("cluster size bounds cannot hold every worker")
    order = np.argsort(times, kind="stable")
    assignment = np.empty(n, dtype=np.int64)
    pinned = np.zeros(n, dtype=bool)
    if anchors is None:
        assignment[order] = np.repeat(np.arange(n_clusters), _cluster_sizes(n, n_clusters))
    else:
        if len(anchors) != n_clusters or len(set(anchors)) != n_clusters:
            raise ValueError(f"need {n_clusters} distinct anchors, got {list(anchors)}")
        pinned[list(anchors)] = True
        assignment[list(anchors)] = np.arange(n_clusters)
        rest = order[~pinned[order]]
        assignment[rest] = np.repeat(np.arange(n_clusters),
                                     np.asarray(_cluster_sizes(n, n_clusters)) - 1)
    mean_time, mean_data = float(times.mean()), float(hist.sum()) / n_clusters

    def utility_of(k: int, assign: np.ndarray) -> float:
        members = np.flatnonzero(assign == k)
        return (cluster_utility(members, hist, times, beta, mean_time, mean_data)
                if members.size else 0.0)

    per_cluster = np.array([utility_of(k, assignment) for k in range(n_clusters)])
    for _ in range(max_passes):
        best_gain, best_assign, best_pc = 1e-12, None, None
        sizes = np.bincount(assignment, minlength=n_clusters)
        for i in rng.permutation(n):
            if pinned[i]:
                continue
            a = assignment[i]
            for k in range(n_clusters):
                if k == a:
                    continue
                candidates = []
                if sizes[a] > min_size and sizes[k] < max_size:
                    candidates.append(None)  # move i to k
                candidates.extend(j for j in np.flatnonzero((assignment == k) & ~pinned))  # swaps
                for j in candidates:
                    trial = assignment.copy()
                    trial[i] = k
                    if j is not None:
                        trial[j] = a
                    ua, uk = utility_of(a, trial), utility_of(k, trial)
                    gain = ua + uk - per_cluster[a] - per_cluster[k]
                    if gain > best_gain:
                        pc = per_cluster.copy()
                        pc[a], pc[k] = ua, uk
                        best_gain, best_assign, best_pc = gain, trial, pc
        if best_assign is None:
            break
        assignment, per_cluster = best_assign, best_pc
    return assignment


def local_frequencies(iteration_times: np.ndarray, tau_max: int,
                      overheads: np.ndarray | None = None) -> np.ndarray:
    """ParallelSFL's per-cluster local updating frequency: tau_k ~ 1 / T_k, so that every
    cluster's round ``C_k + tau_k * T_k`` fits the same round time T_round.

    ``iteration_times`` T_k; ``overheads`` C_k, the per-round model exchange (ours; zero by
    default). T_round (ours) is the longer of the fastest cluster at ``tau_max`` iterations and
    the slowest cluster at one: ``max(min_k(C_k + tau_max T_k), max_k(C_k + T_k))``; then
    ``tau_k = floor((T_round - C_k) / T_k)`` within ``[1, tau_max]``.
    """
    t = np.asarray(iteration_times, dtype=np.float64)
    c = np.zeros_like(t) if overheads is None else np.asarray(overheads, dtype=np.float64)
    round_time = max(float(np.min(c + tau_max * t)), float(np.max(c + t)))
    tau = np.floor((round_time - c) / t + 1e-9).astype(np.int64)
    return np.clip(tau, 1, tau_max)


def cluster_iteration_time(costs: SplitCosts, members: list[EmulatedDevice],
                           hub: EmulatedDevice, batch_size: int) -> float:
    """Emulated time of one cluster iteration with ``hub`` as top worker (the merged iteration
    run on scratch copies of the devices: slowest member, the hub's links and its top step)."""
    return merged_iteration_time(costs, members, hub, [batch_size] * len(members))


def cluster_exchange_time(costs: SplitCosts, members: list[EmulatedDevice], hub: EmulatedDevice,
                          ps: EmulatedDevice) -> float:
    """Emulated per-round model exchange of a cluster (on scratch copies): the full model from
    the PS to the top worker, bottoms to and from the members, the full model back."""
    copies = {id(d): EmulatedDevice(d.name, d.profile) for d in [*members, ps]}
    scratch = Testbed([copies[id(d)] for d in members], copies[id(ps)])
    top, server = copies[id(hub)], copies[id(ps)]
    scratch.transfer(server, top, costs.full_bytes)
    for dev in members:
        scratch.transfer(top, copies[id(dev)], costs.bottom_bytes)
    for dev in members:
        scratch.transfer(copies[id(dev)], top, costs.bottom_bytes)
    scratch.transfer(top, server, costs.full_bytes)
    return scratch.now()


def choose_top_worker(costs: SplitCosts, members: list[EmulatedDevice], batch_size: int) -> int:
    """Index (into ``members``) of the member that, as top worker, makes iterations shortest:
    in effect the one with the most compute and bandwidth."""
    times = [cluster_iteration_time(costs, members, hub, batch_size) for hub in members]
    return int(np.argmin(times))


def fastest_workers(devices: list[EmulatedDevice], count: int) -> list[int]:
    """Indices of the ``count`` fastest worker devices: most compute, then most uplink, then
    index."""
    def speed(i: int):
        profile = devices[i].profile
        return (-profile.compute_gflops, -profile.uplink_mbps, i)
    return sorted(range(len(devices)), key=speed)[:count]
