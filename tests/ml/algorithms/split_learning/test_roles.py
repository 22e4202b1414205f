"""The split-learning role programs distributed over local ranks (real processes over
torch.distributed on 127.0.0.1, launch_local) against their emulated twins: the same curves,
and the measured traffic against the emulated count."""
from __future__ import annotations

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


@pytest.mark.parametrize("ranks", [5, 3])
def test_parallelsfl_members_exchange_with_their_top_worker_not_through_the_ps(ranks):
    """With one rank per worker (5 ranks) every emulated link is a real one, so the measured
    traffic is the emulated count per kind; with 3 ranks, hand-offs between virtual workers of
    one rank cross no link (measured <= emulated). Either way the PS (rank 0) only sends and
    receives full models."""
    result, points = launch_local("parallelsfl", PARALLELSFL, ranks, timeout_s=60)
    twin, twin_points = emulated("parallelsfl", PARALLELSFL)
    assert_same_curves(points, twin_points, (*CURVES, "cluster_label_kl"))
    assert result["clusters"] == twin["clusters"]
    for name in ("traffic_bytes", "traffic_bytes/features", "traffic_bytes/gradients",
                 "traffic_bytes/model"):
        got, want = values(points, name), values(twin_points, name)
        if ranks == PARALLELSFL["workers"] + 1:
            assert got == want and got, name
        else:
            assert [s for s, _ in got] == [s for s, _ in want], name
            assert all(g <= w for (_, g), (_, w) in zip(got, want)), name
    ps = result["placement"][0]["name"]
    rounds, clusters = PARALLELSFL["rounds"], PARALLELSFL["clusters"]
    assert values(points, f"traffic_bytes/{ps}")[-1] == (
        rounds, 2 * rounds * clusters * twin["full_model_bytes"])
