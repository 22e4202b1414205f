"""CoCoDC's Adaptive Transmission and Streaming DiLoCo's staggered timetable."""
from __future__ import annotations

import pytest
import torch

from ml.algorithms.cross_region.transmission import (AdaptiveSchedule, FragmentStatus,
                                               StaggeredSchedule, change_score, select_fragment)

H = 20


def statuses(*specs: tuple[bool, int, bool]) -> list[FragmentStatus]:
    """(sent, last_send_step, in_flight) per fragment, all of 100 parameters."""
    return [FragmentStatus(100, sent, last, flight) for sent, last, flight in specs]


def scores(*values: float):
    return lambda p: values[p]


class TestAdaptiveSelection:
    def test_picks_a_never_sent_fragment_before_a_sent_one_with_a_larger_change(self):
        status = statuses((True, 5, False), (False, 0, False), (True, 6, False))
        assert select_fragment(10, status, H, scores(9.0, 0.0, 5.0)) == 1

    def test_never_picks_a_fragment_in_flight(self):
        status = statuses((False, 0, True), (True, 8, False), (True, 9, True))
        assert select_fragment(12, status, H, scores(0.0, 1.0, 99.0)) == 1

    def test_a_stale_fragment_in_flight_is_skipped_too(self):
        status = statuses((True, 1, True), (True, 10, False))
        assert select_fragment(25, status, H, scores(50.0, 1.0)) == 1

    def test_nothing_when_every_fragment_is_in_flight(self):
        status = statuses((True, 1, True), (False, 0, True))
        assert select_fragment(30, status, H, scores(1.0, 1.0)) is None

    def test_a_fragment_stale_for_h_steps_goes_before_one_with_a_larger_change(self):
        status = statuses((True, 12, False), (True, 2, False))
        assert select_fragment(24, status, H, scores(9.0, 0.0)) == 1

    def test_among_stale_fragments_the_stalest_goes_first(self):
        status = statuses((True, 3, False), (True, 1, False), (True, 2, False))
        assert select_fragment(24, status, H, scores(9.0, 0.0, 5.0)) == 1

    def test_otherwise_the_largest_change_per_parameter_and_step(self):
        status = statuses((True, 10, False), (True, 12, False), (True, 14, False))
        assert select_fragment(16, status, H, scores(1.0, 3.0, 2.0)) == 1

    def test_score_sums_over_workers_per_parameter_and_step(self):
        glob = [torch.zeros(4), torch.zeros(2, 3)]
        a = [torch.ones(4), torch.full((2, 3), -2.0)]  # L1 4 + 12 = 16
        b = [torch.zeros(4), torch.ones(2, 3)]  # L1 6
        assert change_score(glob, [a, b], staleness=2, numel=10) == pytest.approx(22 / 20)


class TestSchedules:
    def test_adaptive_sends_one_fragment_every_h_over_n_steps(self):
        schedule = AdaptiveSchedule(sync_every=H, transmissions_per_round=4)
        status = statuses((False, 0, False), (False, 0, False))
        sends = {t: schedule.select(t, status, scores(0.0, 0.0)) for t in range(0, 21)}
        assert {t for t, s in sends.items() if s} == {5, 10, 15, 20}
        assert all(len(s) <= 1 for s in sends.values())

    def test_staggered_sends_fragment_p_at_offset_p_times_h_over_p(self):
        schedule = StaggeredSchedule(sync_every=H, fragments=4)
        sent = {t: schedule.select(t, [], scores()) for t in range(1, 41)}
        assert {t: s for t, s in sent.items() if s} == {
            5: [1], 10: [2], 15: [3], 20: [0], 25: [1], 30: [2], 35: [3], 40: [0]}

    def test_diloco_is_the_one_fragment_timetable(self):
        schedule = StaggeredSchedule(sync_every=H, fragments=1)
        assert [t for t in range(1, 61) if schedule.select(t, [], scores())] == [20, 40, 60]
