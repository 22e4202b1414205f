"""The split-learning role programs distributed over local ranks (real processes over
torch.distributed on 127.0.0.1, launch_local) against their emulated twins: the same curves,
and the measured traffic against the emulated count."""
from __future__ import annotations

import math

import pytest

from ml import registry
from ml.distributed import launch_local
from ml.reporting import MemoryReporter

# Heterogeneous workers (jetson80 profiles) so that regulation gives unequal batch sizes.
ADASFL = {"dataset": "digits", "workers": 3, "rounds": 2, "local_iterations": 3,
          "batch_size": 16, "testbed": "jetson80", "seed": 5}
MERGESFL = {**ADASFL, "workers": 4, "clients_per_round": 0.75, "ga_generations": 4,
            "ga_population": 6}
MERGESFL_SEQUENTIAL = {**ADASFL, "feature_merging": False}
PARALLELSFL = {"dataset": "digits", "workers": 4, "rounds": 2, "local_iterations": 2,
               "batch_size": 16, "clusters": 2, "testbed": "jetson80", "seed": 5}
CURVES = ("accuracy", "loss", "train_loss", "sim_time_s")


def emulated(method, config):
    entry = registry.get(method)
    reporter = MemoryReporter()
    result = entry.run(entry.parse_config(config), reporter)
    return result, reporter


def values(reporter, name):
    return [(p.step, p.value) for p in reporter.series(name)]


def assert_same_curves(points, twin_points, names):
    for name in names:
        got, want = values(points, name), values(twin_points, name)
        assert [s for s, _ in got] == [s for s, _ in want] and got, name
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-5), name


@pytest.mark.parametrize("method, config", [("adasfl", ADASFL), ("mergesfl", MERGESFL),
                                            ("mergesfl", MERGESFL_SEQUENTIAL)],
                         ids=["adasfl", "mergesfl", "mergesfl-sequential"])
def test_three_local_ranks_reproduce_the_emulated_run(method, config):
    result, points = launch_local(method, config, 3, timeout_s=60)
    twin, twin_points = emulated(method, config)
    assert result["execution"] == "distributed"
    assert result["last_plan"] == twin["last_plan"]
    assert_same_curves(points, twin_points, (*CURVES, "batch_label_kl", "participants"))
    # the measured payload is exactly the emulated traffic count, per kind too
    assert values(points, "traffic_bytes") == values(twin_points, "traffic_bytes")
    for kind in ("features", "gradients", "model"):
        name = f"traffic_bytes/{kind}"
        assert values(points, name) == values(twin_points, name) and values(points, name), name
    assert 0 < result["framing_bytes"] < 1000 * result["messages"]


def test_parallelsfl_reproduces_the_curves_and_measures_the_traffic_through_the_ps():
    """ParallelSFL's PS hosts the clusters' top models in a distributed run, so its features,
    gradients and bottoms cross member <-> PS links: every member's (the top worker's own too,
    which the emulator sends to itself), and no full models (the tops never leave the PS)."""
    result, points = launch_local("parallelsfl", PARALLELSFL, 3, timeout_s=60)
    twin, twin_points = emulated("parallelsfl", PARALLELSFL)
    assert_same_curves(points, twin_points, (*CURVES, "cluster_label_kl"))
    assert [c["members"] for c in result["clusters"]] == [c["members"] for c in twin["clusters"]]
    # what crossed the wire, from the clusters' plan: per iteration every member's features and
    # labels up and its gradient slice down; per round a bottom down and up per worker
    feature_bytes = 4 * math.prod(result["feature_shape"])  # fp32, one sample
    per_round = {"features": 0, "gradients": 0, "model": 0}
    for cluster in result["clusters"]:
        samples = 16 * len(cluster["members"]) * cluster["tau"]
        per_round["features"] += samples * (feature_bytes + 8)
        per_round["gradients"] += samples * feature_bytes
    per_round["model"] = 2 * PARALLELSFL["workers"] * result["bottom_model_bytes"]
    rounds = PARALLELSFL["rounds"]
    for kind, nbytes in per_round.items():
        measured = values(points, f"traffic_bytes/{kind}")
        assert measured[-1] == (rounds, rounds * nbytes), kind
