"""ParallelSFL: split federated learning in parallel clusters of workers.

Paper: Y. Liao, Y. Xu, H. Xu, Z. Yao, L. Huang, C. Qiao, "ParallelSFL: A Novel Split Federated
Learning Framework Tackling Heterogeneity Issues", MobiCom 2024 (arXiv 2410.01256). papers.md §5;
the method text was not available, so steps 2, 3 and 6 are reconstructions [I].

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
   C_k, see :func:`~ml.algorithms.split_control.local_frequencies`).
4. One iteration inside cluster k: every member runs its bottom on a batch of ``batch_size`` and
   sends features and labels to the top worker, which merges them (as MergeSFL), takes one
   top-model step and returns each member its gradient slice (scaled to the member's mean
   loss); the members back-propagate and step. The top step's learning rate is scaled with the
   merged batch as MergeSFL's (``top_lr_scaling``, ours).
5. After tau_k iterations the members send their bottoms to the top worker, which averages them
   (weighted by data size, ours) and uploads the full model (bottom + top) to the PS.
6. The PS aggregates the clusters' full models weighted by data size x tau_k [I] (other rules:
   ``aggregation``, :class:`ClusterAggregate`), sends the result back to the top workers (which pass the bottom on to their members), and re-clusters
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
import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from ml.algorithms.split_control import (cluster_workers, kl_to_uniform, label_distribution,
                                         local_frequencies, random_clusters)
from ml.algorithms.split_training import (SampleStream, SplitCosts, TopLRScaling, draw_batches,
                                          merged_iteration, merged_iteration_time,
                                          set_learning_rate, top_lr_factor)
from ml.algorithms.splitfed import SplitFedConfig
from ml.config import ConfigError
from ml.fl import (Federation, RoundLog, SGDSettings, SplitServer, SplitWorker, WeightedAverage,
                   build_federation, evaluate, get_weights, set_weights)
from ml.method_run import derive_seed, generator, seeded_run, torch_device
from ml.fl.config import DatasetName, PartitionScheme
from ml.fl.weights import Weights
from ml.fl.waiting import WaitingLedger, round_end_barrier
from ml.registry import Method, register
from ml.reporting import Reporter
from ml.testbed.emulator import EmulatedDevice, Testbed


class ParallelSFLConfig(SplitFedConfig):
    """SplitFed's knobs plus clustering and per-cluster local updating frequency."""

    dataset: DatasetName = Field(
        default="digits",
        description="Image data set (default digits, so that the default run takes seconds)")
    partition: PartitionScheme = Field(default="label-pattern",
                                       description="How data is split over workers")
    local_iterations: int = Field(default=10, ge=1, le=100_000,
                                  description="Iterations per round of the fastest cluster "
                                              "(tau_max); every cluster with fixed frequency")
    clusters: int = Field(default=3, ge=1, le=1000, description="Number of clusters")
    min_cluster_size: int = Field(default=2, ge=1, le=1000, description="Smallest cluster")
    max_cluster_size: int = Field(default=8, ge=1, le=1000, description="Largest cluster")
    beta: float = Field(default=0.5, ge=0, le=1000,
                        description="Weight of the speed spread within a cluster against its "
                                    "label divergence from IID")
    clustering: Literal["utility", "random"] = Field(
        default="utility", description="Cluster by the utility, or deal workers at random")
    top_worker: Literal["shortest-iteration", "fastest"] = Field(
        default="shortest-iteration",
        description="Each cluster's top worker: the member giving the shortest iteration, or "
                    "one of the `clusters` fastest devices pinned to each cluster")
    adaptive_frequency: bool = Field(
        default=True, description="tau_k proportional to 1/T_k (off: local_iterations for all)")
    top_lr_scaling: TopLRScaling = Field(
        default="linear",
        description="Learning rate of each cluster's merged top-model step against lr (ours, as "
                    "MergeSFL): 'linear' multiplies it by merged batch / batch_size, 'sqrt' by "
                    "the square root, 'none' keeps lr")
    aggregation: Literal["normalized", "data-tau", "data"] = Field(
        default="data-tau",
        description="How the PS averages the clusters' models: 'data-tau' weights them by data "
                    "x tau_k, 'data' by data, 'normalized' averages each cluster's update "
                    "divided by tau_k and scales it by the mean tau (FedNova)")
    recluster_every: int = Field(default=5, ge=1, le=100_000,
                                 description="Re-cluster every this many rounds (R)")

    @field_validator("clusters")
    @classmethod
    def _clusters_fit(cls, value: int, info: ValidationInfo) -> int:
        workers = info.data.get("workers")
        if workers is not None and value > workers:
            raise ValueError(f"must be <= workers ({workers}), got {value}")
        return value

    @field_validator("min_cluster_size")
    @classmethod
    def _min_fits(cls, value: int, info: ValidationInfo) -> int:
        workers, clusters = info.data.get("workers"), info.data.get("clusters")
        if workers is not None and clusters is not None and clusters * value > workers:
            raise ValueError(f"{clusters} clusters of at least {value} need more than "
                             f"{workers} workers")
        return value

    @field_validator("max_cluster_size")
    @classmethod
    def _max_fits(cls, value: int, info: ValidationInfo) -> int:
        workers, clusters = info.data.get("workers"), info.data.get("clusters")
        smallest = info.data.get("min_cluster_size")
        if smallest is not None and value < smallest:
            raise ValueError(f"must be >= min_cluster_size ({smallest}), got {value}")
        if workers is not None and clusters is not None and clusters * value < workers:
            raise ValueError(f"{clusters} clusters of at most {value} cannot hold {workers} "
                             f"workers")
        return value


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


def fastest_workers(workers: list[SplitWorker], count: int) -> list[int]:
    """Indices of the ``count`` fastest workers: most compute, then most uplink, then index."""
    def speed(w: SplitWorker):
        return (-w.device.profile.compute_gflops, -w.device.profile.uplink_mbps, w.index)
    return [w.index for w in sorted(workers, key=speed)[:count]]


class ClusterAggregate:
    """The PS's average of the clusters' full models, by :attr:`ParallelSFLConfig.aggregation`.

    Clusters run different numbers of iterations. ``data-tau`` (papers.md's reading, default)
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


class Cluster:
    """One cluster: its members, the top worker holding the top model, and tau_k."""

    def __init__(self, members: list[SplitWorker], hub: SplitWorker, server: SplitServer,
                 iteration_time_s: float, exchange_time_s: float):
        self.members = members
        self.hub = hub
        self.server = server
        self.iteration_time_s = iteration_time_s
        self.exchange_time_s = exchange_time_s
        self.tau = 1

    @property
    def num_samples(self) -> int:
        return sum(w.num_samples for w in self.members)


def run(config: ParallelSFLConfig, reporter: Reporter) -> dict:
    """Train with ParallelSFL on the emulated testbed; report per-round metrics; return the
    summary."""
    device = torch_device(config.device)
    with seeded_run(config.seed, device):
        fed = build_federation(config, device)
        return _train(config, fed, reporter)


def _train(config: ParallelSFLConfig, fed: Federation, reporter: Reporter) -> dict:
    wall_start = time.perf_counter()
    testbed, model = fed.testbed, fed.model
    ps = testbed.require_server()
    try:
        bottom, top = model.split(config.split_point)
    except ValueError as exc:
        raise ConfigError({"split_point": str(exc)}) from None
    sgd = SGDSettings(config.lr, config.momentum, config.weight_decay)
    workers = [SplitWorker(i, dev, fed.train, fed.stream(i), copy.deepcopy(bottom), sgd)
               for i, dev in enumerate(testbed.workers)]
    streams = [SampleStream(fed.shards[i], generator(config.seed, "shuffle", i))
               for i in range(len(workers))]
    costs = SplitCosts.measure(bottom, top, fed.dataset.input_shape, fed.device)
    solo_times = costs.iteration_cost(testbed, testbed.workers, ps).times(
        np.full(len(workers), config.batch_size))
    histograms = fed.partition.histograms
    servers = [SplitServer(copy.deepcopy(top), sgd) for _ in range(config.clusters)]
    num_classes = fed.dataset.num_classes
    log = RoundLog(reporter, testbed)
    waiting = WaitingLedger([w.name for w in workers])
    global_bottom, global_top = get_weights(bottom), get_weights(top)
    clusters: list[Cluster] = []
    everyone = [ps, *(w.device for w in workers)]

    for step in range(1, config.rounds + 1):
        log.check_cancelled()
        if (step - 1) % config.recluster_every == 0:
            rng = np.random.default_rng(derive_seed(config.seed, "clustering", step))
            clusters = _form_clusters(config, costs, workers, ps, servers, histograms,
                                      solo_times, rng)
        round_start = testbed.barrier(everyone)
        for cluster in clusters:  # the PS sends every top worker the model at once
            testbed.transfer(ps, cluster.hub.device, costs.full_bytes, "model")
        average = ClusterAggregate(config.aggregation)
        uploads = []
        loss_sum, samples = 0.0, 0
        for cluster in clusters:  # clusters run in parallel, each on its own devices' clocks
            hub = cluster.hub.device
            set_weights(cluster.server.top, global_top)
            cluster.server.optimizer.state.clear()
            set_learning_rate(cluster.server.optimizer, config.lr * top_lr_factor(
                config.top_lr_scaling, config.batch_size * len(cluster.members),
                config.batch_size))
            for worker in cluster.members:
                testbed.transfer(hub, worker.device, costs.bottom_bytes, "model")
                worker.set_weights(global_bottom)
            member_ids = [w.index for w in cluster.members]
            for _ in range(cluster.tau):
                batches = draw_batches(streams, fed.train, member_ids,
                                       [config.batch_size] * len(member_ids))
                result = merged_iteration(testbed, hub, cluster.server, cluster.members, batches,
                                          costs, num_classes)
                loss_sum += result.loss_sum
                samples += result.samples
                waiting.add(result.waiting_s)
            bottoms = WeightedAverage()
            for worker in cluster.members:
                testbed.transfer(worker.device, hub, costs.bottom_bytes, "model")
                bottoms.add(worker.get_weights(), worker.num_samples)
            uploads.append(testbed.send(hub, ps, costs.full_bytes, "model"))
            full = bottoms.result(global_bottom) + get_weights(cluster.server.top)
            average.add(full, cluster.num_samples, cluster.tau)
        for arrival in uploads:
            testbed.receive(ps, arrival)
        merged = average.result(global_bottom + global_top)
        global_bottom, global_top = merged[:len(global_bottom)], merged[len(global_bottom):]
        round_end, idle = round_end_barrier(testbed, everyone)
        waiting.add_by_device(idle)

        evaluation = None
        if step % config.eval_every == 0 or step == config.rounds:
            set_weights(bottom, global_bottom)
            set_weights(top, global_top)
            evaluation = evaluate(model, fed.test_x, fed.test_y)
        log.round(step, round_end - round_start, loss_sum / max(samples, 1), evaluation)
        log.metric("cluster_label_kl", step, float(np.mean(
            [kl_to_uniform(_cluster_distribution(c, histograms)) for c in clusters])))
        for k, cluster in enumerate(clusters):
            log.metric(f"tau/cluster-{k:02d}", step, cluster.tau)
        waiting.report(log, step)

    return {
        "final": log.final,
        "rounds": config.rounds,
        "split_point": config.split_point or model.default_split,
        "feature_shape": list(costs.feature_shape),
        "full_model_bytes": costs.full_bytes,
        "bottom_model_bytes": costs.bottom_bytes,
        "clusters": [{"members": [w.name for w in c.members], "top_worker": c.hub.name,
                      "tau": c.tau, "iteration_time_s": c.iteration_time_s,
                      "exchange_time_s": c.exchange_time_s,
                      "top_lr": c.server.optimizer.param_groups[0]["lr"],
                      "label_kl": kl_to_uniform(_cluster_distribution(c, histograms))}
                     for c in clusters],
        "sim_time_s": testbed.now(),
        "wall_time_s": time.perf_counter() - wall_start,
        "workers": [{"name": w.name, "profile": w.device.profile.name, "samples": w.num_samples}
                    for w in workers],
        "server": ps.name,
    }


def _form_clusters(config: ParallelSFLConfig, costs: SplitCosts, workers: list[SplitWorker],
                   ps: EmulatedDevice, servers: list[SplitServer], histograms: np.ndarray,
                   solo_times: np.ndarray, rng: np.random.Generator) -> list[Cluster]:
    """Steps 2 and 3: clusters, their top workers and local updating frequencies."""
    anchors = fastest_workers(workers, config.clusters) if config.top_worker == "fastest" else None
    if config.clustering == "utility":
        assignment = cluster_workers(histograms, solo_times, config.clusters, config.beta, rng,
                                     min_size=config.min_cluster_size,
                                     max_size=config.max_cluster_size, anchors=anchors)
    else:
        assignment = random_clusters(len(workers), config.clusters, rng)
        if anchors is not None:  # swap each anchor into its own cluster
            for k, i in enumerate(anchors):
                j = next(j for j in np.flatnonzero(assignment == k) if j not in anchors[:k])
                assignment[i], assignment[j] = k, assignment[i]
    clusters = []
    for k in range(config.clusters):
        members = [workers[i] for i in np.flatnonzero(assignment == k)]
        devices = [w.device for w in members]
        if anchors is not None:
            hub = workers[anchors[k]]
        else:
            hub = members[choose_top_worker(costs, devices, config.batch_size)]
        # The top worker serves the others first and back-propagates its own slice last.
        members = [w for w in members if w is not hub] + [hub]
        devices = [w.device for w in members]
        clusters.append(Cluster(
            members, hub, servers[k],
            cluster_iteration_time(costs, devices, hub.device, config.batch_size),
            cluster_exchange_time(costs, devices, hub.device, ps)))
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
    return label_distribution(histograms[[w.index for w in cluster.members]].sum(axis=0))


METHOD = register(Method(
    name="parallelsfl",
    paper="Liao et al., ParallelSFL: A Novel Split Federated Learning Framework Tackling "
          "Heterogeneity Issues, MobiCom 2024 (arXiv 2410.01256)",
    summary="Split FL in parallel clusters: label-balanced clusters of similar-speed workers "
            "train with a top worker each, at per-cluster frequencies, and exchange full models "
            "with the parameter server.",
    config=ParallelSFLConfig,
    run=run,
    baselines=("mergesfl", "adasfl", "splitfed", "fedavg"),
    metrics=("accuracy", "loss", "train_loss", "traffic_bytes", "traffic_bytes/features",
             "traffic_bytes/gradients", "traffic_bytes/model", "round_time_s", "sim_time_s",
             "waiting_time_s", "cluster_label_kl"),
    family="split-learning",
))
