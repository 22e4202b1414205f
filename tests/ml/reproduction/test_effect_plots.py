"""The effect plot's tick labels stay apart on a log axis spanning many decades (ratios of
times far apart), measured on the drawn figure; the browser check of the same figure is in
tests/frontend/test_reproductions.py."""
import math

import pytest

from ml.reproduction import harness, report
from tests.ml.reproduction.test_harness import DECLARATION, runs


def wide_runs() -> list[dict]:
    """The toy runs with A 2,000x faster than B in "easy" and 300x slower in "hard": the
    speed claim's ratio axis spans about eight decades."""
    out = []
    for r in runs():
        r = dict(r, metrics=dict(r["metrics"]))
        if r["arm"] == "b":
            factor = 2000.0 if r["regime"] == "easy" else 1 / 300
            r["metrics"]["time_s"] *= factor * (1 + 0.3 * r["seed"])
        out.append(r)
    return out


def wide_document() -> dict:
    return harness.results_document(DECLARATION, wide_runs(), mode="full", wall_s=1.0)


def label_boxes(fig) -> list[list]:
    """Per panel, the window extents of its drawn y tick labels (horizontal text: the extent is
    the label's box; the rotated regime names are checked in the browser)."""
    renderer = fig.canvas.get_renderer()
    panels = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        low, high = sorted(ax.get_ylim())
        panels.append([t.get_window_extent(renderer)
                       for t in ax.yaxis.get_ticklabels(which="both")
                       if t.get_visible() and t.get_text() and low <= t.get_position()[1] <= high])
    return panels


@pytest.mark.parametrize("low, high, pixels", [(1e-4, 1e4, 230), (0.004, 3.0, 150),
                                              (0.5, 2.0, 230), (1.05, 1.6, 230),
                                              (0.002, 2000.0, 60)])
def test_log_ticks_keep_labels_apart(low, high, pixels):
    spacing = 25.0
    values = report.log_ticks(low, high, pixels, spacing)
    assert values and all(low <= v <= high for v in values)
    per_decade = pixels / math.log10(high / low)
    assert all(math.log10(b / a) * per_decade >= spacing for a, b in zip(values, values[1:]))
    if pixels >= 150:
        assert len(values) >= 3, values  # enough to read the axis


def test_a_narrow_ratio_range_gets_evenly_spaced_ticks_where_they_are_more():
    assert report.log_ticks(1.05, 1.6, 230, 25.0) == pytest.approx([1.1, 1.2, 1.3, 1.4, 1.5, 1.6])
    assert report.log_ticks(0.4, 2.2, 230, 25.0) == pytest.approx([0.5, 1, 1.5, 2])
    assert report.log_ticks(0.4, 6.0, 230, 25.0) == pytest.approx([0.5, 1, 2, 5])  # 1-2-5


def test_the_effect_plot_of_a_wide_range_has_no_overlapping_tick_labels(tmp_path):
    document = wide_document()
    speed = document["evaluation"]["regimes"]
    ratios = [speed[k]["claims"]["speed"]["comparisons"][0]["shown"]["mean"] for k in speed]
    assert max(ratios) / min(ratios) > 1e5  # the axis spans more than five decades
    fig = report.effects_figure(document)
    try:
        fig.canvas.draw()
        for boxes in label_boxes(fig):
            assert len(boxes) >= 3  # labelled, not emptied
            for i, box in enumerate(boxes):
                assert not any(box.overlaps(other) for other in boxes[i + 1:]), boxes
        assert report.hide_overlapping_tick_labels(fig) == 0  # chosen apart, not cut
    finally:
        report._pyplot().close(fig)
    assert report.plot_effects(document, tmp_path / "wide.png").stat().st_size > 1000
