"""IMB-NAS's first finding as measured: Kendall's tau over a fixed sample of subnets."""
from scipy import stats

from ml import registry
from ml.algorithms.neural_architecture_search.ranking import fixed_subnets, rank_correlation
from ml.algorithms.neural_architecture_search.supernet import SearchSpace


def test_the_subnet_sample_is_fixed_and_distinct():
    first, second = fixed_subnets(SearchSpace(), 30), fixed_subnets(SearchSpace(), 30)
    assert [a.label for a in first] == [a.label for a in second]
    assert len({a.label for a in first}) == 30


def test_tau_is_computed_over_the_same_30_subnets_for_every_seed():
    config = registry.get("imb-nas").parse_config(
        {"dataset": "digits", "rho": 10.0, "val_per_class": 10, "supernet_epochs": 1,
         "seed": 0, "testbed": "local-3"})
    result = rank_correlation(config, subnets=30)
    assert len(result["subnets"]) == 30
    assert result["subnets"] == [a.label for a in fixed_subnets(SearchSpace(), 30)]
    tau, _ = stats.kendalltau(result["balanced_accuracy"], result["long_tailed_accuracy"])
    assert result["kendall_tau"] == tau
    assert -1.0 <= tau <= 1.0
