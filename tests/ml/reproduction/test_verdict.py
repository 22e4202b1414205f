"""The verdict rule and the paired statistics on constructed inputs with known answers."""
import math

import pytest
from scipy import stats

from ml.reproduction.stats import Interval, paired_effects, t_interval, to_effect_units
from ml.reproduction.verdict import verdict, weakest


class TestVerdict:
    @pytest.mark.parametrize("interval, bound, expected", [
        (Interval(6.0, 2.0, 10.0, 5), 5.82, "holds"),      # excludes 0, mean above the bound
        (Interval(5.82, 0.1, 11.0, 5), 5.82, "holds"),     # exactly at the bound
        (Interval(3.0, 1.0, 5.0, 5), 5.82, "weaker"),      # excludes 0, mean below the bound
        (Interval(9.0, -1.0, 19.0, 5), 5.82, "not shown"),  # includes 0, however large the mean
        (Interval(-2.0, -4.0, 0.0, 5), 5.82, "not shown"),  # touches 0
        (Interval(-3.0, -5.0, -1.0, 5), 5.82, "reversed"),
        (Interval(0.5, 0.1, 0.9, 10), 0.0, "holds"),       # a bound of zero: any credible gain
    ])
    def test_it_follows_the_declared_rule(self, interval, bound, expected):
        assert verdict(interval, bound) == expected

    def test_a_ratio_bound_is_compared_in_log_units(self):
        speedup = Interval(math.log(1.5), math.log(1.1), math.log(2.0), 5)
        assert verdict(speedup, to_effect_units(1.36, "ratio")) == "holds"
        assert verdict(speedup, to_effect_units(1.74, "ratio")) == "weaker"

    def test_a_claim_takes_its_weakest_comparison(self):
        assert weakest(["holds", "weaker", "holds"]) == "weaker"
        assert weakest(["holds", "reversed", "not shown"]) == "reversed"
        assert weakest([]) == "not shown"


class TestIntervals:
    def test_t_interval_matches_the_textbook_case(self):
        # mean 3, sd sqrt(2.5), n 5: half-width t(0.975, 4) * sd / sqrt(5) = 1.9632
        interval = t_interval([1, 2, 3, 4, 5])
        assert interval.mean == 3
        assert interval.high - 3 == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5))
        assert interval.low == pytest.approx(3 - 1.963243, abs=1e-6)

    def test_t_interval_agrees_with_scipy(self):
        values = [0.3, -0.1, 0.7, 0.2, 0.45, 0.05]
        low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / len(values),
                                     scale=stats.sem(values))
        interval = t_interval(values)
        assert (interval.low, interval.high) == pytest.approx((low, high))

    def test_one_value_has_an_unbounded_interval(self):
        interval = t_interval([4.0])
        assert interval.mean == 4.0 and math.isinf(interval.low) and math.isinf(interval.high)
        assert verdict(interval, 0.0) == "not shown"

    def test_paired_effects_are_oriented_so_that_positive_is_better(self):
        assert paired_effects([0.9, 0.8], [0.85, 0.82], "difference", "higher", 100) == \
            pytest.approx([5.0, -2.0])
        # time to target: lower is better, the effect is log(baseline / method)
        assert paired_effects([10.0], [20.0], "ratio", "lower") == pytest.approx([math.log(2)])
        with pytest.raises(ValueError):
            paired_effects([1.0], [1.0, 2.0], "difference", "higher")
        with pytest.raises(ValueError):
            paired_effects([0.0], [1.0], "ratio", "lower")
