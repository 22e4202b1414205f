"""SplitFed (SFL-V2) on real data and the emulated testbed."""
import math

import pytest

from ml import registry
from ml.config import ConfigError
from ml.models import build_model, model_bytes, training_flops_per_sample
from ml.reporting import MemoryReporter

SPLITFED = registry.get("splitfed")


def run_splitfed(**values):
    reporter = MemoryReporter()
    result = SPLITFED.run(SPLITFED.parse_config(values), reporter)
    return reporter, result


@pytest.mark.slow
def test_it_reaches_85_percent_on_mnist_iid():
    reporter, _ = run_splitfed(dataset="mnist", workers=10, rounds=2, local_iterations=10,
                               partition="iid", lr=0.05, eval_every=2)
    assert reporter.last("accuracy") >= 0.85


def test_traffic_is_features_and_labels_up_gradients_down_and_bottoms_both_ways():
    workers, rounds, iterations, batch = 3, 2, 4, 16
    reporter, result = run_splitfed(dataset="digits", workers=workers, rounds=rounds,
                                    local_iterations=iterations, batch_size=batch,
                                    testbed="local-3")
    assert result["split_point"] == "conv2"
    feature_bytes = 4 * math.prod(result["feature_shape"])  # fp32 per sample
    samples = rounds * iterations * workers * batch  # shards hold > 16 * 4 samples: full batches
    bottom, _ = build_model("cnn", 10, (1, 8, 8)).split("conv2")
    assert result["bottom_model_bytes"] == model_bytes(bottom)

    assert reporter.last("traffic_bytes/features") == samples * (feature_bytes + 8)
    assert reporter.last("traffic_bytes/gradients") == samples * feature_bytes
    assert reporter.last("traffic_bytes/model") == rounds * workers * 2 * model_bytes(bottom)
    assert reporter.last("traffic_bytes") == sum(
        reporter.last(f"traffic_bytes/{kind}") for kind in ("features", "gradients", "model"))


def test_the_server_serves_the_workers_batches_one_after_another():
    # A 1 GFLOP/s server and instant links: the server's top-model work is the bottleneck, and
    # SFL-V2 runs it for one worker's batch after another, never two at once.
    instant = {"uplink_mbps": 1e6, "downlink_mbps": 1e6, "rtt_ms": 0.0}
    testbed = [{"profile": "jetson-nx", **instant}, {"profile": "jetson-nx", **instant},
               {"profile": "a6000-server", "compute_gflops": 1.0, **instant}]
    iterations, workers, batch = 3, 2, 32
    reporter, result = run_splitfed(dataset="digits", workers=workers, rounds=1,
                                    local_iterations=iterations, batch_size=batch,
                                    testbed=testbed)
    bottom, top = build_model("cnn", 10, (1, 8, 8)).split()
    top_flops = training_flops_per_sample(top, tuple(result["feature_shape"]))
    server_work = iterations * workers * batch * top_flops / 1e9
    worker_work = iterations * batch * training_flops_per_sample(bottom, (1, 8, 8)) / 150e9
    assert server_work <= reporter.last("round_time_s") <= server_work + worker_work + 1e-3


def test_the_same_seed_gives_identical_metrics_bit_for_bit():
    values = dict(dataset="digits", workers=3, rounds=2, local_iterations=3, momentum=0.9,
                  partition="label-pattern", seed=5, testbed="local-3")
    first, _ = run_splitfed(**values)
    second, _ = run_splitfed(**values)

    def metrics(reporter):
        return [(p.name, p.step, p.value, p.sim_time_s) for p in reporter.points]

    assert metrics(first) == metrics(second)


def test_an_unknown_split_point_is_a_config_error_naming_it():
    with pytest.raises(ConfigError) as info:
        run_splitfed(dataset="digits", workers=2, rounds=1, split_point="fc9", testbed="local-3")
    assert "conv1" in info.value.errors["split_point"]


def test_it_is_in_the_catalogue_with_fedavg_as_baseline():
    entry = SPLITFED.describe()
    assert "Thapa" in entry["paper"] and "AAAI 2022" in entry["paper"]
    assert entry["baselines"] == ["fedavg"]
    assert {"traffic_bytes/features", "traffic_bytes/gradients"} <= set(entry["metrics"])


def test_clients_per_round_trains_only_the_drawn_workers():
    # 4 of 6 workers per round: bottoms travel to and from 4 workers, features come from 4
    # workers' full batches; the draw is seeded, so a repeat is identical.
    workers, rounds, iterations, batch = 6, 3, 2, 16
    config = dict(dataset="digits", workers=workers, rounds=rounds, local_iterations=iterations,
                  batch_size=batch, clients_per_round=4, seed=5)
    reporter, result = run_splitfed(**config)
    bottom, _ = build_model("cnn", 10, (1, 8, 8)).split("conv2")
    feature_bytes = 4 * math.prod(result["feature_shape"])
    assert result["participants_per_round"] == 4
    assert reporter.last("traffic_bytes/model") == rounds * 4 * 2 * model_bytes(bottom)
    assert reporter.last("traffic_bytes/features") == rounds * iterations * 4 * batch * (
        feature_bytes + 8)
    again, _ = run_splitfed(**config)
    assert [p.value for p in reporter.series("accuracy")] == [
        p.value for p in again.series("accuracy")]


def test_clients_per_round_is_validated_and_parallelsfl_has_none():
    with pytest.raises(ConfigError) as err:
        SPLITFED.parse_config({"workers": 4, "clients_per_round": 6})
    assert "clients_per_round" in err.value.errors
    with pytest.raises(ConfigError) as err:
        registry.get("parallelsfl").parse_config({"clients_per_round": 0.5})
    assert "clients_per_round" in err.value.errors
