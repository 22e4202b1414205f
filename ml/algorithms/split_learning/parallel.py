"""ParallelSFL: split federated learning in parallel clusters of workers.

Paper: Y. Liao, Y. Xu, H. Xu, Z. Yao, L. Huang, C. Qiao, "ParallelSFL: A Novel Split Federated
Learning Framework Tackling Heterogeneity Issues", MobiCom 2024 (arXiv 2410.01256). Notes:
docs/methods/parallelsfl.md; the method text was not available, so steps 2, 3 and 6 are
reconstructions [I].

Steps:
1. State monitoring: the parameter server (PS) knows every worker's label histogram, compute
   rate and bandwidth (here: the partition and the device profiles).
2. Clustering [I]: workers are split into ``clusters`` groups (sizes within bounds) maximising
   sum_C U(C), U(C) = -KL(P_C || uniform) - beta * (max_{i in C} t_i - min_{i in C} t_i) / mean t,
   so each cluster's data is close to IID and its members are of similar speed. Each cluster's
   top worker, which holds the top model, is the member with the most compute and bandwidth
   (ours: the member that, as the hub, gives the cluster the shortest iteration).
3. Local updating frequency [I]: cluster k runs tau_k iterations per round, tau_k ~ 1 / T_k
   (T_k its iteration time) so that all clusters fill the same round time, capped at
   ``local_iterations``, at least 1 (ours: the round also holds each cluster's model exchange
   C_k, see :func:`.clustering.local_frequencies`).
4. One iteration inside cluster k: every member runs its bottom on a batch of ``batch_size`` and
   sends features and labels to the top worker, which merges them (as MergeSFL), takes one
   top-model step and returns each member its gradient slice (scaled to the member's mean
   loss); the members back-propagate and step. The top step's learning rate is scaled with the
   merged batch as MergeSFL's (``top_lr_scaling``, ours).
5. After tau_k iterations the members send their bottoms to the top worker, which averages them
   (weighted by data size, ours) and uploads the full model (bottom + top) to the PS.
6. The PS aggregates the clusters' full models weighted by data size x tau_k [I] (other rules:
   ``aggregation``, :class:`ClusterAggregate`), sends the result back to the top workers (which
   pass the bottom on to their members), and re-clusters
   every ``recluster_every`` rounds.

Ours besides: t_i in the utility is worker i's per-iteration time at ``batch_size`` against the
PS (compute, feature upload, gradient download, latency); ``mean t`` is over all workers; the
clustering is a local search (moves and swaps) from speed-sorted groups; optimiser state
restarts every round; the PS waits for every cluster (synchronous rounds).

Ablations (config): ``clustering=random`` deals workers into random clusters;
``adaptive_frequency=false`` runs ``local_iterations`` in every cluster.

Option (ours): ``top_worker="fastest"`` gives every cluster one of the ``clusters`` fastest
devices (most compute, then most uplink) as its top worker, pinned there while the clustering
places the others, so no cluster's top model sits on a slow device.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ml.algorithms.split_learning.clustering import (choose_top_worker, cluster_exchange_time,
                                                     cluster_iteration_time, cluster_workers,
                                                     fastest_workers, local_frequencies,
                                                     random_clusters)
from ml.algorithms.split_learning.config import ParallelSFLConfig
from ml.algorithms.split_learning.context import SplitContext
from ml.algorithms.split_learning.planning import kl_to_uniform, label_distribution
from ml.algorithms.split_learning.sampling import SampleStream
from ml.algorithms.split_learning.training import (SplitCosts, emulate_merged, merge_step,
                                                   set_learning_rate, top_lr_factor)
from ml.algorithms.split_learning.workers import SampledSplitWorker, SplitServer
from ml.distributed.peers import Mailbox
from ml.distributed.runtime import Runtime
from ml.fl import RoundLog, SGDSettings, WeightedAverage, evaluate, get_weights, set_weights
from ml.fl.workers import TrainData
from ml.fl.waiting import WaitingLedger, round_end_barrier
from ml.fl.weights import Weights
from ml.method_run import MethodRun, derive_seed
from ml.reporting import Reporter
from ml.testbed.emulator import EmulatedDevice


class ClusterAggregate:
    """The PS's average of the clusters' full models, by :attr:`ParallelSFLConfig.aggregation`.

    Clusters run different numbers of iterations. ``data-tau`` (our reading of the paper, default)
    weights each model by data x tau_k, favouring the fast clusters' data; ``data`` lets a
    cluster that took one step pull the model back towards the start; ``normalized`` (after
    FedNova, Wang et al. 2020) divides each cluster's update ``w_k - w`` by tau_k, averages the
    per-iteration updates with data weights and scales the result by the data-weighted mean tau.
    Measured in docs/methods/parallelsfl.md: ``data-tau`` trains best on our testbed.
    """

    def __init__(self, rule: str):
        self.rule = rule
        self.models = WeightedAverage()
        self.mean_tau = 0.0
        self.total = 0.0

    def add(self, full: Weights, num_samples: int, tau: int) -> None:
        if self.rule == "normalized":
            self.models.add(full, num_samples / tau)
            self.mean_tau += num_samples * tau
            self.total += num_samples
        else:
            self.models.add(full, num_samples * (tau if self.rule == "data-tau" else 1))

    @torch.no_grad()
    def result(self, start: Weights) -> Weights:
        """The new global model from ``start`` (the model every cluster began the round with)."""
        average = self.models.result(start)
        if self.rule != "normalized" or self.total <= 0:
            return average
        # sum_k p_k (w_k - w) / tau_k, with the weights above normalised to sum 1 rather than
        # to sum_k p_k / tau_k: rescale, then take mean-tau steps of it
        scale = (self.mean_tau / self.total) * self.models.total_weight / self.total
        return [w + (a - w) * scale if w.is_floating_point() else a
                for w, a in zip(start, average)]


class ClusterWorker(SampledSplitWorker):
    """A ParallelSFL worker: a member of its cluster and, when chosen, the cluster's top worker.

    The top worker holds the cluster's top model; members exchange features, gradient slices
    and bottoms with it directly (:mod:`ml.distributed.peers`), the coordinator (the PS) only
    triggers each step and exchanges the full model with the top worker.
    """

    def __init__(self, index: int, device: EmulatedDevice, data: TrainData,
                 samples: SampleStream, bottom: nn.Module, top: nn.Module, sgd: SGDSettings,
                 peers: Mailbox):
        super().__init__(index, device, data, samples, bottom, sgd)
        self._top = top  # copied when this worker first leads a cluster
        self._sgd = sgd
        self.server: SplitServer | None = None
        self.peers = peers
        self._round_bottom: Weights | None = None

    # -- as a member --------------------------------------------------------------------------

    def join_round(self, hub: int) -> None:
        """Take the round's bottom from the top worker."""
        self.set_weights(self.peers.recv(self.index, hub))

    def forward_to(self, size: int, hub: int) -> None:
        """Forward the next ``size`` samples; send the features and labels to the top worker."""
        self.peers.send(self.index, hub, list(self.forward_take(size)), "features")

    def backward_from(self, hub: int) -> None:
        """Back-propagate the gradient slice the top worker sent."""
        (grad,) = self.peers.recv(self.index, hub)
        self.backward(grad)

    def send_bottom(self, hub: int) -> None:
        self.peers.send(self.index, hub, self.get_weights(), "model")

    # -- as the top worker --------------------------------------------------------------------

    def lead_round(self, full: Weights, lr: float, members: list[int]) -> None:
        """Start a round from the PS's full model: load the top (rate ``lr``, fresh optimiser
        state) and the bottom, and pass the bottom on to the other ``members``."""
        bottom, top = full[:len(self.get_weights())], full[len(self.get_weights()):]
        if self.server is None:
            self.server = SplitServer(copy.deepcopy(self._top), self._sgd)
        set_weights(self.server.top, top)
        self.server.optimizer.state.clear()
        set_learning_rate(self.server.optimizer, lr)
        self.set_weights(bottom)
        self._round_bottom = bottom
        for member in members:
            self.peers.send(self.index, member, bottom, "model")

    def lead_iteration(self, members: list[int], size: int) -> list:
        """One merged iteration: the members' features (theirs, then its own ``size`` samples),
        one top step, the scaled gradient slices back; ``[loss x samples, samples]``."""
        replies = [self.peers.recv(self.index, member) for member in members]
        replies.append(list(self.forward_take(size)))
        labels = [y for _, y in replies]
        loss, grads = merge_step(self.server, [f for f, _ in replies], labels)
        for member, grad in zip(members, grads):
            self.peers.send(self.index, member, [grad], "gradients")
        self.backward(grads[-1])
        samples = sum(len(y) for y in labels)
        return [loss.item() * samples, samples]

    def finish_round(self, members: list[int], weights: list[int]) -> Weights:
        """Average the members' bottoms (and its own, last) by ``weights``; the full model."""
        bottoms = WeightedAverage()
        for member, weight in zip(members, weights):
            bottoms.add(self.peers.recv(self.index, member), weight)
        bottoms.add(self.get_weights(), weights[-1])
        return bottoms.result(self._round_bottom) + get_weights(self.server.top)


#: What the PS may call on a ParallelSFL worker.
EXPOSED = frozenset({"join_round", "forward_to", "backward_from", "send_bottom", "lead_round",
                     "lead_iteration", "finish_round"})


@dataclass
class Cluster:
    """One cluster: its members (worker indices, the top worker last), the top worker ``hub``,
    its top model's learning rate, its emulated iteration and exchange times and tau_k."""

    members: list[int]
    hub: int
    top_lr: float
    num_samples: int
    iteration_time_s: float
    exchange_time_s: float
    tau: int = 1


def coordinate(config: ParallelSFLConfig, context: SplitContext, runtime: Runtime,
               reporter: Reporter) -> dict:
    """The PS's role: clusters, frequencies and the full-model average; each step of a cluster
    is triggered here and runs between its members and its top worker."""
    run = MethodRun(reporter, context.fed.device)
    fed, costs = context.fed, context.costs
    testbed, model = fed.testbed, fed.model
    ps = testbed.require_server()
    devices = testbed.workers
    solo_times = costs.iteration_cost(testbed, devices, ps).times(
        np.full(len(devices), config.batch_size))
    histograms = fed.partition.histograms
    sizes = [len(shard) for shard in fed.shards]
    log = RoundLog(reporter, testbed)
    waiting = WaitingLedger([d.name for d in devices])
    global_bottom, global_top = get_weights(context.bottom), get_weights(context.top)
    clusters: list[Cluster] = []
    everyone = [ps, *devices]

    for step in range(1, config.rounds + 1):
        log.check_cancelled()
        if (step - 1) % config.recluster_every == 0:
            rng = np.random.default_rng(derive_seed(config.seed, "clustering", step))
            clusters = _form_clusters(config, costs, devices, sizes, ps, histograms, solo_times,
                                      rng)
        round_start = testbed.barrier(everyone)
        for cluster in clusters:  # the PS sends every top worker the model at once
            testbed.transfer(ps, devices[cluster.hub], costs.full_bytes, "model")
        average = ClusterAggregate(config.aggregation)
        uploads = []
        loss_sum, samples = 0.0, 0
        losses, fulls = _clusters_round(config, clusters, global_bottom + global_top, runtime,
                                        testbed, costs, sizes, waiting)
        for cluster, cluster_losses, full in zip(clusters, losses, fulls):
            for loss, n in cluster_losses:
                loss_sum += loss
                samples += n
            uploads.append(testbed.send(devices[cluster.hub], ps, costs.full_bytes, "model"))
            average.add(full, cluster.num_samples, cluster.tau)
        for arrival in uploads:
            testbed.receive(ps, arrival)
        merged = average.result(global_bottom + global_top)
        global_bottom, global_top = merged[:len(global_bottom)], merged[len(global_bottom):]
        round_end, idle = round_end_barrier(testbed, everyone)
        waiting.add_by_device(idle)

        evaluation = None
        if step % config.eval_every == 0 or step == config.rounds:
            set_weights(context.bottom, global_bottom)
            set_weights(context.top, global_top)
            evaluation = evaluate(model, fed.test_x, fed.test_y)
        runtime.report_round(log, step, round_end - round_start, loss_sum / max(samples, 1),
                             evaluation, waiting)
        log.metric("cluster_label_kl", step, float(np.mean(
            [kl_to_uniform(_cluster_distribution(c, histograms)) for c in clusters])))
        for k, cluster in enumerate(clusters):
            log.metric(f"tau/cluster-{k:02d}", step, cluster.tau)

    return run.summary(
        log.final,
        rounds=config.rounds,
        split_point=context.split_point,
        feature_shape=list(costs.feature_shape),
        full_model_bytes=costs.full_bytes,
        bottom_model_bytes=costs.bottom_bytes,
        clusters=[{"members": [devices[i].name for i in c.members],
                   "top_worker": devices[c.hub].name, "tau": c.tau,
                   "iteration_time_s": c.iteration_time_s,
                   "exchange_time_s": c.exchange_time_s, "top_lr": c.top_lr,
                   "label_kl": kl_to_uniform(_cluster_distribution(c, histograms))}
                  for c in clusters],
        sim_time_s=testbed.now(),
        workers=[{"name": d.name, "profile": d.profile.name, "samples": n}
                 for d, n in zip(devices, sizes)],
        server=ps.name,
    )


def _clusters_round(config: ParallelSFLConfig, clusters: list[Cluster], full: Weights,
                    runtime: Runtime, testbed, costs: SplitCosts, sizes: list[int],
                    waiting: WaitingLedger) -> tuple[list[list[tuple[float, int]]], list[Weights]]:
    """Steps 4-5 in every cluster at once: each top worker takes the full model and passes the
    bottom on, tau_k merged iterations run between the members and the top worker, the top
    worker averages the bottoms. Each phase is triggered in every cluster before any is waited
    for, so clusters on different agents run concurrently. Returns each cluster's (loss x
    samples, samples) per iteration and its full model.

    Every receive is triggered after its send and a ``runtime.flush()`` (the ordering contract
    of ml.distributed.peers); clusters touch disjoint devices, so the emulated clocks do not
    depend on how their steps interleave.
    """
    workers, devices = runtime.workers, testbed.workers
    batch = config.batch_size
    for cluster in clusters:
        workers[cluster.hub].cast("lead_round", full, cluster.top_lr, cluster.members[:-1],
                                  kind="model")
    runtime.flush()
    for cluster in clusters:
        for i in cluster.members:
            testbed.transfer(devices[cluster.hub], devices[i], costs.bottom_bytes, "model")
        for i in cluster.members[:-1]:
            workers[i].cast("join_round", cluster.hub)
    losses: list[list[tuple[float, int]]] = [[] for _ in clusters]
    for t in range(max(c.tau for c in clusters)):
        active = [k for k, c in enumerate(clusters) if t < c.tau]
        for k in active:
            for i in clusters[k].members[:-1]:
                workers[i].cast("forward_to", batch, clusters[k].hub)
        runtime.flush()
        steps = {k: workers[clusters[k].hub].call("lead_iteration", clusters[k].members[:-1],
                                                  batch) for k in active}
        for k in active:
            cluster = clusters[k]
            loss, n = steps[k].result()
            losses[k].append((loss, n))
            for i in cluster.members[:-1]:
                workers[i].cast("backward_from", cluster.hub)
            waits = emulate_merged(testbed, devices[cluster.hub],
                                   [devices[i] for i in cluster.members],
                                   [batch] * len(cluster.members), costs)
            waiting.add(dict(zip(cluster.members, waits)))
    for cluster in clusters:
        for i in cluster.members[:-1]:
            workers[i].cast("send_bottom", cluster.hub)
    runtime.flush()
    fulls = [workers[c.hub].call("finish_round", c.members[:-1], [sizes[i] for i in c.members],
                                 reply_kind="model") for c in clusters]
    for cluster in clusters:
        for i in cluster.members:
            testbed.transfer(devices[i], devices[cluster.hub], costs.bottom_bytes, "model")
    return losses, [f.result() for f in fulls]


def _form_clusters(config: ParallelSFLConfig, costs: SplitCosts, devices: list[EmulatedDevice],
                   sizes: list[int], ps: EmulatedDevice, histograms: np.ndarray,
                   solo_times: np.ndarray, rng: np.random.Generator) -> list[Cluster]:
    """Steps 2 and 3: clusters, their top workers and local updating frequencies."""
    anchors = fastest_workers(devices, config.clusters) if config.top_worker == "fastest" else None
    if config.clustering == "utility":
        assignment = cluster_workers(histograms, solo_times, config.clusters, config.beta, rng,
                                     min_size=config.min_cluster_size,
                                     max_size=config.max_cluster_size, anchors=anchors)
    else:
        assignment = random_clusters(len(devices), config.clusters, rng)
        if anchors is not None:  # swap each anchor into its own cluster
            for k, i in enumerate(anchors):
                j = next(j for j in np.flatnonzero(assignment == k) if j not in anchors[:k])
                assignment[i], assignment[j] = k, assignment[i]
    clusters = []
    for k in range(config.clusters):
        members = [int(i) for i in np.flatnonzero(assignment == k)]
        if anchors is not None:
            hub = anchors[k]
        else:
            hub = members[choose_top_worker(costs, [devices[i] for i in members],
                                            config.batch_size)]
        # The top worker serves the others first and back-propagates its own slice last.
        members = [i for i in members if i != hub] + [hub]
        member_devices = [devices[i] for i in members]
        top_lr = config.lr * top_lr_factor(config.top_lr_scaling,
                                           config.batch_size * len(members), config.batch_size)
        clusters.append(Cluster(
            members, hub, top_lr, sum(sizes[i] for i in members),
            cluster_iteration_time(costs, member_devices, devices[hub], config.batch_size),
            cluster_exchange_time(costs, member_devices, devices[hub], ps)))
    if config.adaptive_frequency:
        taus = local_frequencies(np.array([c.iteration_time_s for c in clusters]),
                                 config.local_iterations,
                                 np.array([c.exchange_time_s for c in clusters]))
    else:
        taus = np.full(len(clusters), config.local_iterations)
    for cluster, tau in zip(clusters, taus):
        cluster.tau = int(tau)
    return clusters


def _cluster_distribution(cluster: Cluster, histograms: np.ndarray) -> np.ndarray:
    return label_distribution(histograms[cluster.members].sum(axis=0))
