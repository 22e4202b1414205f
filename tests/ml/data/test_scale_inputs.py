"""The inputs of issue #20's benches: mnist-5000's per-class split, iid-repeated shards, and the
federated config accepting cnn-small and 10,000 workers."""
import numpy as np
import pytest

from ml.config import ConfigError
from ml.data import load_dataset, partition
from ml.registry import get


def test_mnist_5000_splits_each_digit_400_for_training_and_100_for_test():
    data = load_dataset("mnist-5000")
    assert data.train_y.bincount().tolist() == [400] * 10
    assert data.test_y.bincount().tolist() == [100] * 10
    assert data.input_shape == (1, 28, 28)


def test_iid_repeated_gives_every_worker_a_shard_even_beyond_the_data():
    labels = np.arange(40) % 10
    parts = partition(labels, 100, "iid-repeated", seed=0)
    assert [len(s) for s in parts.indices] == [1] * 100
    assert sorted(int(s[0]) for s in parts.indices[:40]) == list(range(40))  # one pass first
    few = partition(labels, 4, "iid-repeated", seed=0)
    assert sorted(np.concatenate(few.indices).tolist()) == list(range(40))  # disjoint when it fits


def test_iid_still_refuses_more_workers_than_samples():
    with pytest.raises(ValueError):
        partition(np.arange(40) % 10, 100, "iid", seed=0)


def test_the_federated_config_takes_cnn_small_and_10000_workers():
    fedavg = get("fedavg")
    config = fedavg.parse_config({"model": "cnn-small", "dataset": "mnist-5000",
                                  "workers": 10_000, "partition": "iid-repeated"})
    assert (config.model, config.workers) == ("cnn-small", 10_000)
    with pytest.raises(ConfigError) as refused:
        fedavg.parse_config({"workers": 10_001})
    assert "workers" in refused.value.errors
