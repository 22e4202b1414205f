"""AdaSFL: batch-size regulation on a heterogeneous emulated testbed, from the catalogue."""
from __future__ import annotations

import pytest

from ml import registry
from ml.config import ConfigError
from ml.reporting import MemoryReporter

CONFIG = {"dataset": "digits", "workers": 6, "rounds": 2, "local_iterations": 3,
          "batch_size": 16, "min_batch_size": 2, "max_batch_size": 64}


def test_regulation_gives_fast_devices_larger_batches_and_shorter_rounds():
    method = registry.get("adasfl")
    regulated, fixed = MemoryReporter(), MemoryReporter()
    summary = method.run(method.parse_config(CONFIG), regulated)
    baseline = method.run(method.parse_config({**CONFIG, "batch_regulation": False}), fixed)

    profile = {w["name"]: w["profile"] for w in summary["workers"]}
    sizes = dict(zip(summary["last_plan"]["members"], summary["last_plan"]["batch_sizes"]))
    assert sum(sizes.values()) == 6 * 16
    by_kind = {}
    for name, b in sizes.items():
        by_kind.setdefault(profile[name], set()).add(b)
    assert max(by_kind["jetson-tx2"]) < min(by_kind["jetson-nx"]) < min(
        by_kind["jetson-agx-orin"])
    assert set(baseline["last_plan"]["batch_sizes"]) == {16}

    # Same samples per iteration, less time: nobody waits long for the TX2s any more.
    assert regulated.last("round_time_s") < fixed.last("round_time_s")
    assert regulated.last("waiting_time_s") < fixed.last("waiting_time_s")
    assert regulated.last("traffic_bytes/features") == fixed.last("traffic_bytes/features")
    assert 0.0 <= regulated.last("accuracy") <= 1.0


def test_batch_bounds_must_hold_the_mean_batch():
    with pytest.raises(ConfigError) as err:
        registry.get("adasfl").parse_config({"batch_size": 8, "min_batch_size": 16})
    assert "min_batch_size" in err.value.errors
