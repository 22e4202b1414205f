"""Distributed runs as real processes over torch.distributed on 127.0.0.1 (launch_local):
equivalence with the emulated run, a killed rank, a cancelled run."""
import os
import signal
import time

import pytest

from ml import registry
from ml.distributed import LocalLaunch, launch_local
from ml.reporting import MemoryReporter

FEDAVG = {"dataset": "digits", "workers": 5, "rounds": 3, "clients_per_round": 0.8,
          "testbed": "local-3", "seed": 7}
SPLITFED = {"dataset": "digits", "workers": 3, "rounds": 2, "local_iterations": 4,
            "batch_size": 40, "testbed": "local-3", "seed": 3}
CURVES = ("accuracy", "loss", "train_loss", "sim_time_s")


def emulated(method, config):
    entry = registry.get(method)
    reporter = MemoryReporter()
    result = entry.run(entry.parse_config(config), reporter)
    return result, reporter


def values(reporter, name):
    return [(p.step, p.value) for p in reporter.series(name)]


@pytest.mark.parametrize("method, config", [("fedavg", FEDAVG), ("splitfed", SPLITFED)])
def test_three_local_ranks_reproduce_the_emulated_run(method, config):
    result, points = launch_local(method, config, 3, timeout_s=30)
    twin, twin_points = emulated(method, config)
    assert result["execution"] == "distributed"
    for name in CURVES:
        got, want = values(points, name), values(twin_points, name)
        assert [s for s, _ in got] == [s for s, _ in want] and got
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6), name
    # the measured payload is exactly the emulated traffic count, per kind too
    assert values(points, "traffic_bytes") == values(twin_points, "traffic_bytes")
    kinds = {p.name for p in twin_points.points if p.name.startswith("traffic_bytes/")}
    for name in kinds:
        assert values(points, name) == values(twin_points, name), name
    # framing (JSON headers) is counted apart: a few hundred bytes per message
    assert 0 < result["framing_bytes"] < 1000 * result["messages"]
    placement = result["placement"]
    assert [s["rank"] for s in placement] == [0, 1, 2]
    for slot in placement:
        for series in ("traffic_bytes", "compute_time_s", "comm_time_s", "waiting_time_s"):
            assert points.series(f"{series}/{slot['name']}"), (series, slot["name"])
    assert len(points.series("round_time_s")) == config["rounds"]


LONG = {**FEDAVG, "rounds": 200, "eval_every": 100}


def started(launch, deadline_s=120):
    """Wait until rank 0 reported its first round."""
    deadline = time.monotonic() + deadline_s
    while not any(p.name == "round_time_s" for p in launch.points()):
        assert time.monotonic() < deadline, launch.log(0)[-3000:]
        assert all(p.poll() is None for p in launch.procs.values()), launch.log(0)[-3000:]
        time.sleep(0.1)


def test_a_killed_rank_fails_the_survivors_with_peer_lost_naming_its_device(tmp_path):
    launch = LocalLaunch("fedavg", LONG, 3, timeout_s=5, workdir=tmp_path).start()
    try:
        started(launch)
        killed_at = time.monotonic()
        os.kill(launch.pid(2), signal.SIGKILL)
        outcomes = launch.wait(timeout_s=60)
        elapsed = time.monotonic() - killed_at
    finally:
        launch.kill()
    lost = launch.placement[2]
    assert outcomes[2] is None
    for rank in (0, 1):
        assert outcomes[rank]["error_type"] == "PeerLost", outcomes[rank]
        assert outcomes[rank]["lost"]["rank"] == 2
        assert outcomes[rank]["lost"]["device"] == lost.device
        assert f"device {lost.name}" in outcomes[rank]["error"]
    assert elapsed < 5 + 10


def test_cancel_stops_every_rank(tmp_path):
    launch = LocalLaunch("fedavg", LONG, 3, timeout_s=10, workdir=tmp_path).start()
    try:
        started(launch)
        stopped_at = time.monotonic()
        launch.stop()
        outcomes = launch.wait(timeout_s=60)
        elapsed = time.monotonic() - stopped_at
    finally:
        launch.kill()
    assert {r: o["error_type"] for r, o in outcomes.items()} == {0: "Cancelled", 1: "Cancelled",
                                                                 2: "Cancelled"}
    assert elapsed < 10
    assert max(p.step for p in launch.points()) < LONG["rounds"]
