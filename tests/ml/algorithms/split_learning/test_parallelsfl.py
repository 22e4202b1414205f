"""ParallelSFL: clustering by the utility, top-worker choice, local updating frequencies and the
full-model exchange with the parameter server, on real partitions and the emulated testbed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ml import registry
from ml.algorithms.split_learning.clustering import (choose_top_worker, cluster_iteration_time,
                                                     cluster_workers, clustering_utility,
                                                     local_frequencies, random_clusters)
from ml.algorithms.split_learning.parallel import ClusterAggregate
from ml.algorithms.split_learning.planning import kl_to_uniform
from ml.algorithms.split_learning.training import SplitCosts
from ml.config import ConfigError
from ml.data.partition import partition
from ml.models import build_model
from ml.reporting import MemoryReporter
from ml.testbed import resolve_testbed

#: Labels of a balanced 10-class set of 4,000 samples, as MNIST-5000's training split.
LABELS = np.repeat(np.arange(10), 400)


@pytest.fixture(scope="module")
def mnist_costs():
    torch.manual_seed(0)
    bottom, top = build_model("cnn", 10, (1, 28, 28)).split()
    return SplitCosts.measure(bottom, top, (1, 28, 28), torch.device("cpu"))


def mean_cluster_kl(assignment: np.ndarray, histograms: np.ndarray, clusters: int) -> float:
    return float(np.mean([kl_to_uniform(histograms[assignment == k].sum(axis=0))
                          for k in range(clusters)]))


def test_clusters_label_distributions_are_closer_to_uniform_than_random_clusters(mnist_costs):
    histograms = partition(LABELS, 20, "dirichlet", seed=0, alpha=0.3).histograms
    testbed = resolve_testbed("jetson80", 20)
    times = mnist_costs.iteration_cost(testbed, testbed.workers, testbed.server).times(
        np.full(20, 32))
    rng = np.random.default_rng(0)

    chosen = cluster_workers(histograms, times, 4, beta=0.5, rng=rng, min_size=2, max_size=8)
    randoms = [random_clusters(20, 4, rng) for _ in range(30)]

    assert np.bincount(chosen, minlength=4).min() >= 2
    assert np.bincount(chosen, minlength=4).max() <= 8
    assert mean_cluster_kl(chosen, histograms, 4) < min(
        mean_cluster_kl(r, histograms, 4) for r in randoms)
    assert clustering_utility(chosen, 4, histograms, times, 0.5) > max(
        clustering_utility(r, 4, histograms, times, 0.5) for r in randoms)


def test_speed_weight_groups_similar_devices(mnist_costs):
    histograms = partition(LABELS, 20, "iid", seed=0).histograms  # labels cannot matter
    testbed = resolve_testbed("jetson80", 20)
    times = mnist_costs.iteration_cost(testbed, testbed.workers, testbed.server).times(
        np.full(20, 32))
    chosen = cluster_workers(histograms, times, 3, beta=5.0, rng=np.random.default_rng(0))
    profiles = np.array([d.profile.name for d in testbed.workers])
    spread = lambda a: sum(np.ptp(times[a == k]) for k in range(3))  # noqa: E731
    assert spread(chosen) < min(spread(random_clusters(20, 3, np.random.default_rng(s)))
                                for s in range(10))
    for k in range(3):  # no cluster mixes a TX2 with an AGX Orin
        kinds = set(profiles[chosen == k])
        assert not {"jetson-tx2", "jetson-agx-orin"} <= kinds


def test_top_worker_is_the_member_with_most_compute_and_bandwidth(mnist_costs):
    testbed = resolve_testbed("jetson80", 20)
    by_profile = {d.profile.name: d for d in testbed.workers}
    members = [by_profile["jetson-tx2"], by_profile["jetson-agx-orin"], by_profile["jetson-nx"]]
    assert choose_top_worker(mnist_costs, members, 32) == 1
    orin_hub = cluster_iteration_time(mnist_costs, members, members[1], 32)
    tx2_hub = cluster_iteration_time(mnist_costs, members, members[0], 32)
    assert orin_hub < tx2_hub
    assert all(d.clock_s == 0 for d in members)  # estimated on scratch copies


def test_local_frequency_is_inverse_to_cluster_iteration_time():
    times = np.array([0.1, 0.2, 0.4])
    tau = local_frequencies(times, tau_max=8)
    assert tau.tolist() == [8, 4, 2]  # every cluster's round takes 0.8 s
    assert tau * times == pytest.approx([0.8] * 3)
    # A straggler cluster sets the round; the others fill it, up to tau_max.
    assert local_frequencies(np.array([0.1, 0.2, 0.4, 5.0]), 8).tolist() == [8, 8, 8, 1]
    # The per-round model exchange counts towards the round.
    tau = local_frequencies(times, tau_max=8, overheads=np.array([0.0, 0.0, 0.4]))
    assert tau.tolist() == [8, 4, 1]


def test_it_exchanges_full_models_between_top_workers_and_the_ps():
    method = registry.get("parallelsfl")
    config = method.parse_config({"dataset": "digits", "workers": 6, "clusters": 2, "rounds": 2,
                                  "local_iterations": 3, "batch_size": 16,
                                  "recluster_every": 1})
    reporter = MemoryReporter()
    summary = method.run(config, reporter)

    clusters = summary["clusters"]
    assert sorted(n for c in clusters for n in c["members"]) == sorted(
        w["name"] for w in summary["workers"])
    assert all(c["top_worker"] in c["members"] for c in clusters)
    assert max(c["tau"] for c in clusters) == 3
    # each top step is taken at lr scaled by the merged batch over batch_size (linear rule)
    assert [c["top_lr"] for c in clusters] == pytest.approx(
        [config.lr * len(c["members"]) for c in clusters])
    # Per round: the PS and each top worker swap the full model; every other member swaps its
    # bottom with its top worker.
    per_round = 2 * 2 * summary["full_model_bytes"] + 2 * (6 - 2) * summary["bottom_model_bytes"]
    assert reporter.last("traffic_bytes/model") == 2 * per_round
    for name in ("accuracy", "loss", "traffic_bytes/features", "traffic_bytes/gradients",
                 "round_time_s", "sim_time_s", "waiting_time_s", "cluster_label_kl"):
        assert len(reporter.series(name)) == 2, name
    assert reporter.series("sim_time_s")[1].value > reporter.series("sim_time_s")[0].value


@pytest.mark.parametrize("rule, expected", [
    ("data-tau", (100 * 10 * 10 + 100 * 1 * 3) / (100 * 10 + 100 * 1)),
    ("data", (10 + 3) / 2),
    # per-iteration updates 1 and 3 average to 2; times the mean tau, 5.5
    ("normalized", 2 * 5.5),
])
def test_the_ps_averages_clusters_that_ran_different_numbers_of_iterations(rule, expected):
    start = [torch.zeros(2)]
    aggregate = ClusterAggregate(rule)
    aggregate.add([torch.full((2,), 10.0)], num_samples=100, tau=10)  # fast: 10 steps of +1
    aggregate.add([torch.full((2,), 3.0)], num_samples=100, tau=1)    # slow: 1 step of +3
    assert aggregate.result(start)[0].tolist() == pytest.approx([expected] * 2)


def test_normalized_aggregation_is_plain_averaging_when_every_cluster_ran_alike():
    start = [torch.tensor([1.0])]
    aggregate = ClusterAggregate("normalized")
    aggregate.add([torch.tensor([3.0])], num_samples=300, tau=4)
    aggregate.add([torch.tensor([7.0])], num_samples=100, tau=4)
    assert aggregate.result(start)[0].item() == pytest.approx((3 * 300 + 7 * 100) / 400)


def test_impossible_cluster_sizes_name_the_field():
    method = registry.get("parallelsfl")
    with pytest.raises(ConfigError) as err:
        method.parse_config({"workers": 10, "clusters": 2, "max_cluster_size": 4})
    assert "max_cluster_size" in err.value.errors
    with pytest.raises(ConfigError) as err:
        method.parse_config({"workers": 3, "clusters": 4, "min_cluster_size": 1})
    assert "clusters" in err.value.errors


def test_an_unknown_aggregation_rule_names_the_field():
    with pytest.raises(ConfigError) as err:
        registry.get("parallelsfl").parse_config({"aggregation": "median"})
    assert list(err.value.errors) == ["aggregation"]
