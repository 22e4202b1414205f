"""Partitions give every sample to one worker, follow their scheme and repeat for a seed."""
import numpy as np
import pytest

from ml.data import long_tailed_indices, partition

LABELS = np.repeat(np.arange(10), 100)  # 10 balanced classes, 1,000 samples


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "label-pattern", "unequal"])
def test_every_sample_goes_to_exactly_one_worker(scheme):
    part = partition(LABELS, 7, scheme, seed=3)
    merged = np.concatenate(part.indices)
    assert np.array_equal(np.sort(merged), np.arange(len(LABELS)))
    assert part.histograms.shape == (7, 10) and part.histograms.sum() == len(LABELS)
    assert (part.sizes() >= 1).all()
    np.testing.assert_allclose(part.label_distributions().sum(axis=1), 1.0)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "label-pattern", "unequal", "long-tailed"])
def test_same_seed_same_partition_other_seed_other_partition(scheme):
    a, b, c = (partition(LABELS, 5, scheme, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices))
    assert not all(np.array_equal(x, y) for x, y in zip(a.indices, c.indices))


def test_label_pattern_gives_fraction_p_of_class_c_to_worker_c_mod_n():
    part = partition(LABELS, 4, "label-pattern", seed=0, p=0.6)
    for c in range(10):
        column = part.histograms[:, c]
        assert column[c % 4] == 60
        assert sorted(np.delete(column, c % 4).tolist()) == [13, 13, 14]  # 40 / 3 each


def test_dirichlet_01_is_far_more_skewed_than_iid():
    def mean_distance_from_global(part):
        return np.abs(part.label_distributions() - 0.1).sum(axis=1).mean()

    iid = mean_distance_from_global(partition(LABELS, 10, "iid", seed=0))
    skewed = mean_distance_from_global(partition(LABELS, 10, "dirichlet", seed=0, alpha=0.1))
    assert iid < 0.3 and skewed > 1.0


def test_tiny_alpha_still_gives_every_worker_its_minimum():
    part = partition(LABELS, 50, "dirichlet", seed=0, alpha=0.01, min_size=5)
    assert part.sizes().min() >= 5 and part.sizes().sum() == len(LABELS)


def test_unequal_sizes_span_the_ratio_rho():
    sizes = partition(LABELS, 5, "unequal", seed=0, rho=16.0).sizes()
    # shares 1, 1/2, 1/4, 1/8, 1/16 of 1,000 samples, normalised
    assert sorted(sizes.tolist()) == [32, 65, 129, 258, 516]
    assert sizes.max() / sizes.min() == pytest.approx(16, rel=0.02)


def test_long_tailed_counts_follow_the_exp_profile():
    kept = long_tailed_indices(LABELS, rho=10, seed=0)
    counts = np.bincount(LABELS[kept])
    assert counts.tolist() == [int(100 * 0.1 ** (c / 9)) for c in range(10)]
    assert counts[0] == 100 and counts[-1] == 10
    assert np.array_equal(kept, long_tailed_indices(LABELS, rho=10, seed=0))
    step = np.bincount(LABELS[long_tailed_indices(LABELS, rho=10, seed=0, profile="step")])
    assert step.tolist() == [100] * 5 + [10] * 5


def test_long_tailed_scheme_splits_the_exp_long_tail_iid_over_workers():
    part = partition(LABELS, 4, "long-tailed", seed=0, rho=10.0)
    expected = [int(100 * 0.1 ** (c / 9)) for c in range(10)]
    assert part.histograms.sum(axis=0).tolist() == expected  # the global long tail, head first
    merged = np.sort(np.concatenate(part.indices))
    assert np.array_equal(merged, long_tailed_indices(LABELS, rho=10.0, seed=0))
    assert len(np.unique(merged)) == len(merged)  # no sample on two workers
    assert part.sizes().max() - part.sizes().min() <= 1  # iid shares of the tail
    assert part.params["rho"] == 10.0
    again = partition(LABELS, 4, "long-tailed", seed=0, rho=10.0)
    assert all(np.array_equal(a, b) for a, b in zip(part.indices, again.indices))
    steeper = partition(LABELS, 4, "long-tailed", seed=0, rho=100.0)
    assert steeper.histograms.sum(axis=0)[-1] == 1 and steeper.sizes().sum() < part.sizes().sum()


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0, "scheme": "iid"}, "workers"),
    ({"workers": 2, "scheme": "shards"}, "unknown partition scheme 'shards'"),
    ({"workers": 2, "scheme": "dirichlet", "alpha": 0}, "alpha must be > 0"),
    ({"workers": 2, "scheme": "label-pattern", "p": 1.5}, r"p must be in \[0, 1\]"),
    ({"workers": 2, "scheme": "unequal", "rho": 0.5}, "rho must be >= 1"),
    ({"workers": 2, "scheme": "long-tailed", "rho": 0.5}, "rho must be >= 1"),
    ({"workers": 300, "scheme": "long-tailed", "rho": 100}, "samples of the long tail"),
    ({"workers": 2000, "scheme": "iid"}, "cannot give 2000 workers"),
])
def test_bad_arguments_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        partition(LABELS, seed=0, **kwargs)
