"""MergeSFL: feature merging, gradient dispatch, batch-size regulation and GA selection, checked
on real models, real data partitions and the emulated testbed."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ml import registry
from ml.algorithms.split_learning.planning import (kl_to_uniform, merged_distribution,
                                                   regulate_batch_sizes, select_workers_ga,
                                                   uniform_batch_sizes)
from ml.algorithms.split_learning.sampling import SampleStream
from ml.algorithms.split_learning.training import (SplitCosts, dispatch_gradients, draw_batches,
                                                   emulate_merged, merged_iteration,
                                                   set_learning_rate, top_lr_factor)
from ml.algorithms.split_learning.workers import SplitServer, SplitWorker
from ml.config import ConfigError
from ml.data import load_dataset
from ml.data.partition import partition
from ml.fl import SGDSettings, TrainData
from ml.method_run import generator
from ml.models import build_model
from ml.reporting import MemoryReporter
from ml.testbed import resolve_testbed


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def split_setup(digits, workers: int, p: float = 0.9):
    """Label-pattern shards of digits, a split CNN, one SplitWorker per jetson80 device."""
    torch.manual_seed(0)
    model = build_model("cnn", digits.num_classes, digits.input_shape)
    bottom, top = model.split()
    testbed = resolve_testbed("jetson80", workers)
    parts = partition(digits.train_y.numpy(), workers, "label-pattern", seed=0, p=p)
    data = TrainData(digits.train_x, digits.train_y)
    sgd = SGDSettings(lr=0.1)
    shards = [torch.from_numpy(idx) for idx in parts.indices]
    members = [SplitWorker(i, dev, data, None, copy.deepcopy(bottom), sgd)
               for i, dev in enumerate(testbed.workers)]
    streams = [SampleStream(s, generator(0, "shuffle", i)) for i, s in enumerate(shards)]
    costs = SplitCosts.measure(bottom, top, digits.input_shape, torch.device("cpu"))
    return testbed, members, SplitServer(top, sgd), streams, data, costs, parts


def test_merged_batches_mix_workers_labels_in_one_top_step(digits):
    testbed, members, server, streams, data, costs, parts = split_setup(digits, workers=10)
    batches = draw_batches(streams, data, list(range(10)), [16] * 10)
    features = torch.cat([w.bottom(x).detach() for w, (x, _) in zip(members, batches)])
    labels = torch.cat([y for _, y in batches])
    expected_top = copy.deepcopy(server.top)
    F.cross_entropy(expected_top(features), labels).backward()
    with torch.no_grad():
        for param in expected_top.parameters():
            param -= 0.1 * param.grad

    result = merged_iteration(testbed, testbed.server, server, members, batches, costs, 10)

    # Each worker's own batch is dominated by its class; the merged batch holds all of them.
    dominant = {i: int(torch.argmax(counts)) for i, counts in result.label_counts.items()}
    assert dominant == {i: i for i in range(10)}
    merged = sum(result.label_counts.values())
    assert int((merged > 0).sum()) == 10
    assert kl_to_uniform(merged.numpy()) < min(kl_to_uniform(c.numpy())
                                               for c in result.label_counts.values())
    # The server took exactly one SGD step on the concatenated features.
    for got, want in zip(server.top.parameters(), expected_top.parameters()):
        torch.testing.assert_close(got, want)
    assert result.samples == 160


def test_gradient_slices_are_scaled_to_each_workers_mean_loss(digits):
    torch.manual_seed(1)
    bottom, top = build_model("cnn", digits.num_classes, digits.input_shape).split()
    sizes = [5, 20, 7]
    starts = np.cumsum([0] + sizes)
    features = [bottom(digits.train_x[a:b]).detach() for a, b in zip(starts, starts[1:])]
    labels = [digits.train_y[a:b] for a, b in zip(starts, starts[1:])]

    merged = torch.cat(features).requires_grad_(True)
    F.cross_entropy(top(merged), torch.cat(labels)).backward()
    slices = dispatch_gradients(merged.grad, sizes)

    for i, (f, y, g, b) in enumerate(zip(features, labels, slices, sizes)):
        torch.testing.assert_close(g, merged.grad[starts[i]:starts[i + 1]] * sum(sizes) / b)
        own = f.clone().requires_grad_(True)
        F.cross_entropy(top(own), y).backward()  # worker i's own mean loss, same top
        torch.testing.assert_close(g, own.grad)


def test_regulated_batch_sizes_equalise_emulated_iteration_times_within_10_percent():
    torch.manual_seed(0)
    model = build_model("cnn", 10, (1, 28, 28))
    bottom, top = model.split()
    testbed = resolve_testbed("jetson80", 20)
    costs = SplitCosts.measure(bottom, top, (1, 28, 28), torch.device("cpu"))
    cost = costs.iteration_cost(testbed, testbed.workers, testbed.server)

    regulated = regulate_batch_sizes(cost, total=640, b_min=4, b_max=128)
    uniform = uniform_batch_sizes(20, 640)

    assert regulated.sum() == 640 and regulated.min() >= 4 and regulated.max() <= 128
    times = cost.times(regulated)
    assert times.max() / times.min() <= 1.10
    slow = cost.times(uniform)
    assert slow.max() / slow.min() > 2  # the testbed really is heterogeneous
    assert times.max() < slow.max()
    # Faster devices get larger batches.
    orin = [i for i, d in enumerate(testbed.workers) if d.profile.name == "jetson-agx-orin"]
    tx2 = [i for i, d in enumerate(testbed.workers) if d.profile.name == "jetson-tx2"]
    assert regulated[orin].min() > regulated[tx2].max()


def test_regulated_iterations_leave_little_waiting_on_the_testbed(digits):
    waits = {}
    for mode in ("regulated", "uniform"):
        testbed, members, server, streams, data, costs, _ = split_setup(digits, workers=10)
        cost = costs.iteration_cost(testbed, testbed.workers, testbed.server)
        sizes = (regulate_batch_sizes(cost, 320, 4, 128) if mode == "regulated"
                 else uniform_batch_sizes(10, 320))
        start = testbed.barrier(testbed.devices)
        batches = draw_batches(streams, data, list(range(10)), sizes)
        result = merged_iteration(testbed, testbed.server, server, members, batches, costs, 10)
        iteration = testbed.barrier(testbed.devices) - start
        waits[mode] = max(result.waiting_s.values()) / iteration
    assert waits["regulated"] < 0.10 < waits["uniform"]


def test_ga_selection_balances_labels_and_prefers_fast_workers():
    hist = partition(np.repeat(np.arange(10), 100), 20, "dirichlet", seed=3, alpha=0.2).histograms
    dist = hist / hist.sum(axis=1, keepdims=True)
    per_sample = np.where(np.arange(20) < 10, 0.01, 0.002)  # workers 0-9 five times slower
    from ml.algorithms.split_learning.planning import IterationCost
    cost = IterationCost(per_sample, np.full(20, 0.01))
    rng = np.random.default_rng(0)

    balanced = select_workers_ga(dist, cost, 6, 192, 4, 128, mu=0.0, rng=rng)
    random_kl = [kl_to_uniform(merged_distribution(
        dist[m], regulate_batch_sizes(cost.subset(m), 192, 4, 128)))
        for m in (np.sort(rng.choice(20, 6, replace=False)) for _ in range(50))]
    assert balanced.kl <= min(random_kl)

    fast = select_workers_ga(dist, cost, 6, 192, 4, 128, mu=100.0, rng=rng)
    assert set(fast.members) <= set(range(10, 20))
    assert fast.iteration_time_s < balanced.iteration_time_s or set(balanced.members) <= set(
        range(10, 20))
    assert fast.batch_sizes.sum() == 192


def test_it_runs_from_the_catalogue_and_merging_mixes_what_the_top_sees():
    method = registry.get("mergesfl")
    base = {"dataset": "digits", "workers": 6, "rounds": 2, "local_iterations": 3,
            "batch_size": 16, "partition_p": 0.9, "clients_per_round": 4}
    merged, separate = MemoryReporter(), MemoryReporter()
    summary = method.run(method.parse_config(base), merged)
    method.run(method.parse_config({**base, "feature_merging": False}), separate)

    assert summary["final"]["participants"] == 4
    assert len(summary["last_plan"]["members"]) == 4
    assert sum(summary["last_plan"]["batch_sizes"]) == 64
    for name in ("accuracy", "loss", "traffic_bytes", "traffic_bytes/features",
                 "traffic_bytes/gradients", "traffic_bytes/model", "round_time_s",
                 "waiting_time_s"):
        assert len(merged.series(name)) == 2, name
    assert any(p.name.startswith("waiting_time_s/worker-") for p in merged.points)
    sim = [p.sim_time_s for p in merged.series("accuracy")]
    assert 0 < sim[0] < sim[1]
    assert merged.last("batch_label_kl") < separate.last("batch_label_kl")
    assert merged.last("traffic_bytes/features") == separate.last("traffic_bytes/features")


def test_bad_batch_bounds_name_the_field():
    with pytest.raises(ConfigError) as err:
        registry.get("mergesfl").parse_config({"batch_size": 32, "max_batch_size": 16})
    assert "max_batch_size" in err.value.errors
    with pytest.raises(ConfigError) as err:
        registry.get("mergesfl").parse_config({"workers": 4, "clients_per_round": 6})
    assert "clients_per_round" in err.value.errors


def test_regulated_sizes_equalise_each_workers_iteration_on_the_emulated_testbed():
    """On the emulated clocks (not the linear cost model): with regulated batch sizes every
    worker's iteration (bottom forward, features up, gradient down, backward) ends within 10%
    of the others'; with equal batch sizes the TX2s finish far behind the AGX Orins."""
    torch.manual_seed(0)
    bottom, top = build_model("cnn", 10, (1, 28, 28)).split()
    costs = SplitCosts.measure(bottom, top, (1, 28, 28), torch.device("cpu"))
    spread = {}
    for mode in ("regulated", "uniform"):
        testbed = resolve_testbed("jetson80", 20)
        cost = costs.iteration_cost(testbed, testbed.workers, testbed.server)
        sizes = (regulate_batch_sizes(cost, 640, 4, 128) if mode == "regulated"
                 else uniform_batch_sizes(20, 640))
        start = testbed.barrier(testbed.devices)
        emulate_merged(testbed, testbed.server, testbed.workers, list(sizes), costs)
        finished = np.array([d.clock_s - start for d in testbed.workers])
        spread[mode] = finished.max() / finished.min()
    assert spread["regulated"] <= 1.10
    assert spread["uniform"] > 1.3


def test_top_lr_factor_follows_the_scaling_rule():
    # 20 workers x 32 samples merged, against one worker's 32.
    assert top_lr_factor("none", 640, 32) == 1.0
    assert top_lr_factor("sqrt", 640, 32) == pytest.approx(20 ** 0.5)
    assert top_lr_factor("linear", 640, 32) == pytest.approx(20.0)
    # Warm-up ramps linearly from 1; a merged batch below one worker's never shrinks the rate.
    assert top_lr_factor("linear", 640, 32, progress=0.5) == pytest.approx(10.5)
    assert top_lr_factor("linear", 640, 32, progress=0.0) == 1.0
    assert top_lr_factor("linear", 16, 32) == 1.0


def test_scaled_top_step_is_the_factor_times_the_plain_step(digits):
    """The merged top step with rate lr * k moves the top k times as far as with lr, while
    the bottoms' steps (their own mean-loss gradients at lr) do not change."""
    moves, bottoms = {}, {}
    for factor in (1.0, 4.0):
        testbed, members, server, streams, data, costs, _ = split_setup(digits, workers=4)
        before = [p.detach().clone() for p in server.top.parameters()]
        bottom_before = [p.detach().clone() for p in members[0].bottom.parameters()]
        set_learning_rate(server.optimizer, 0.1 * factor)
        batches = draw_batches(streams, data, list(range(4)), [8, 16, 8, 32])
        merged_iteration(testbed, testbed.server, server, members, batches, costs, 10)
        moves[factor] = [p.detach() - b for p, b in zip(server.top.parameters(), before)]
        bottoms[factor] = [p.detach() - b
                           for p, b in zip(members[0].bottom.parameters(), bottom_before)]
    for plain, scaled in zip(moves[1.0], moves[4.0]):
        torch.testing.assert_close(scaled, 4.0 * plain)
    assert any(float(m.abs().max()) > 0 for m in moves[1.0])
    for plain, scaled in zip(bottoms[1.0], bottoms[4.0]):
        torch.testing.assert_close(scaled, plain)


@pytest.mark.parametrize("rule,expected", [("none", [1.0, 1.0, 1.0]),
                                           ("sqrt", [1.5, 2.0, 2.0]),
                                           ("linear", [2.5, 4.0, 4.0])])
def test_catalogue_run_sets_the_top_rate_by_the_rule_with_warmup(rule, expected):
    """4 participants of batch 16 merge 64 samples: the top's rate is lr times 1, 2 or 4,
    reached after a 2-round linear warm-up."""
    method = registry.get("mergesfl")
    reporter = MemoryReporter()
    method.run(method.parse_config(
        {"dataset": "digits", "workers": 4, "rounds": 3, "local_iterations": 1,
         "batch_size": 16, "lr": 0.05, "top_lr_scaling": rule, "top_lr_warmup_rounds": 2}),
        reporter)
    got = [p.value for p in reporter.series("top_lr")]
    assert got == pytest.approx([0.05 * f for f in expected])


def test_catalogue_default_steps_the_merged_top_at_the_workers_rate():
    """As the authors' code (ymliao98/MergeSFL): the server's optimiser runs at ``lr`` on the
    merged batch. Scaling it by the merged batch (0.5 at 10 x 32 samples) collapsed MergeSFL on
    MNIST to one predicted class (issue #18)."""
    method = registry.get("mergesfl")
    config = method.parse_config({"dataset": "digits", "workers": 4, "rounds": 1,
                                  "local_iterations": 1, "batch_size": 16, "lr": 0.05})
    assert config.top_lr_scaling == "none"
    reporter = MemoryReporter()
    method.run(config, reporter)
    assert [p.value for p in reporter.series("top_lr")] == pytest.approx([0.05])
