"""A quick split-FL reproduction run is deterministic for its seed, and its settings reach the
methods (the pathological partition, ParallelSFL's fastest top workers)."""
import numpy as np
import pytest

from ml.algorithms.split_learning.clustering import fastest_workers
from ml.data.partition import partition
from ml.reproduction import harness, split_fl
from ml.reproduction.declaration import Regime

TINY = Regime("tiny", "digits, 8 workers", {"dataset": "digits", "workers": 8,
                                             "server_mbps": 100.0, "budget_s": 1.0})


def strip_wall(records):
    return [{k: v for k, v in r.items() if k not in ("wall_s", "cpu_s")} for r in records]


def test_a_quick_run_repeats_exactly():
    arms = [split_fl.DECLARATION.arm("mergesfl")]
    jobs = [(TINY, arm, 3) for arm in arms]
    context = {"accuracy": 0.5, "budget_s": 1.0}
    first = harness.run_all(split_fl.DECLARATION, split_fl.run_arm, jobs, context,
                            log=lambda line: None)
    second = harness.run_all(split_fl.DECLARATION, split_fl.run_arm, jobs, context,
                             log=lambda line: None)
    assert strip_wall(first) == strip_wall(second)
    for record in first:
        assert record["metrics"]["rounds"] >= 1
        assert record["metrics"]["final_accuracy"] is not None
        assert 0 < record["cpu_s"]
        assert record["diverged_at_s"] is None
        assert all(t <= 1.0 for t in record["curve"]["time_s"])


def test_the_pathological_partition_gives_each_worker_its_classes():
    labels = np.repeat(np.arange(10), 40)
    for k in (1, 2):
        parts = partition(labels, 20, "pathological", seed=4, classes_per_worker=k)
        assert ((parts.histograms > 0).sum(axis=1) == k).all()
        assert sum(len(i) for i in parts.indices) == len(labels)
    with pytest.raises(ValueError, match="cannot cover"):
        partition(labels, 4, "pathological", seed=0, classes_per_worker=2)


def test_parallelsfl_pins_the_fastest_devices_as_top_workers():
    from ml import registry
    from ml.reporting import MemoryReporter

    method = registry.get("parallelsfl")
    config = method.parse_config(split_fl.config_for(TINY, split_fl.DECLARATION.arm(
        "parallelsfl"), 0) | {"rounds": 1, "clusters": 2})
    summary = method.run(config, MemoryReporter())
    # 8 workers of jetson80: 3 TX2 (60 GFLOP/s), 4 NX (150), 1 AGX Orin (600)
    assert {c["top_worker"] for c in summary["clusters"]} == {"jetson-agx-orin-01",
                                                              "jetson-nx-01"}
    speed = {"jetson-tx2": 60, "jetson-nx": 150, "jetson-agx-orin": 600}
    profiles = {w["name"]: w["profile"] for w in summary["workers"]}
    for cluster in summary["clusters"]:
        assert speed[profiles[cluster["top_worker"]]] == max(
            speed[profiles[m]] for m in cluster["members"])
    assert fastest_workers([], 0) == []


def test_a_run_stops_before_a_round_that_cannot_end_within_the_budget():
    def reporter_after(round_ends, budget=20.0):
        reporter = split_fl.BudgetReporter(budget)
        previous = 0.0
        for step, end in enumerate(round_ends, start=1):
            reporter.metric("round_time_s", step, end - previous, end)
            reporter.metric("accuracy", step, 0.5, end)
            previous = end
        return reporter

    assert not split_fl.BudgetReporter(20.0).should_stop()  # nothing measured yet
    # rounds of 6 s: after 12 s another one (ending by 18 s) fits; after 18 s none can (even
    # a round of 0.8 x 6 s would end at 22.8 s), so the run stops before training it
    assert not reporter_after([6.0, 12.0]).should_stop()
    early = reporter_after([6.0, 12.0, 18.0])
    assert early.should_stop() and early.stopped_early
    # the shortest round so far sets the prediction: 18 + 0.8 x 1.5 = 19.2 s still fits
    assert not reporter_after([10.0, 16.5, 18.0]).should_stop()
    spent = reporter_after([10.0, 21.0])
    assert spent.should_stop() and not spent.stopped_early


def test_a_diverging_run_counts_with_its_measured_accuracy_and_errors_cross_processes():
    import pickle

    from ml.wire import WireError

    error = pickle.loads(pickle.dumps(WireError("value", "Must be a finite number.")))
    assert (error.field, error.message) == ("value", "Must be a finite number.")
    exploding = Regime("exploding", "digits, lr 10", {**TINY.settings, "lr": 10.0})
    record = split_fl.run_arm(exploding, split_fl.DECLARATION.arm("splitfed"), 0,
                              {"accuracy": 0.5, "budget_s": 1.0})
    assert "error" not in record
    assert record["diverged_at_s"] is not None and record["diverged_at_s"] <= 1.0
    assert record["metrics"]["final_accuracy"] is not None  # the diverged model, evaluated
