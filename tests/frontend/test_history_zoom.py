"""A long series: the experiment page draws the downsampled history and fetches full
resolution for the step range the user zooms into (frontend/static/frontend/history_zoom.js)."""
from __future__ import annotations

import pytest

from controlplane.metrics.actions import ingest_metrics
from controlplane.metrics.downsample import HISTORY_BUCKETS
from tests.controlplane.metrics.points import point

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STEPS = 3 * 2 * HISTORY_BUCKETS  # three times what the history keeps of one series


def test_it_fetches_the_zoomed_range_at_full_resolution(owner_page, owner, device_factory,
                                                         experiment_factory):
    enrolled = device_factory(owner, name="cloud-zoom")
    experiment = experiment_factory(owner, enrolled.device, preset="local-3", name="long")
    run = experiment.runs.get()
    ingest_metrics(run, [point("loss", step, (step % 7) / 7) for step in range(STEPS)])
    page = owner_page
    page.goto(f"/experiments/{experiment.id}/")
    page.wait_for_function(
        "() => { const c = document.querySelector('.chart[data-metric=\"loss\"]');"
        " return !!c && !!c.data && c.data[0].x.length > 0; }")
    drawn = page.evaluate(
        "() => document.querySelector('.chart[data-metric=\"loss\"]').data[0].x.length")
    assert drawn <= 2 * HISTORY_BUCKETS + 2  # downsampled

    page.evaluate("() => window.Plotly.relayout("
                  "document.querySelector('.chart[data-metric=\"loss\"]'),"
                  " {'xaxis.range': [1000, 1100]})")
    page.wait_for_function(
        "() => { const x = document.querySelector('.chart[data-metric=\"loss\"]').data[0].x;"
        " return x.filter(s => s >= 1000 && s <= 1100).length === 101; }")
    trace = page.evaluate(
        "() => { const t = document.querySelector('.chart[data-metric=\"loss\"]').data[0];"
        " return t.x.map((x, i) => [x, t.y[i]]).filter(([x]) => x >= 1000 && x <= 1100); }")
    # Drawn at the chart's precision (six significant digits).
    assert [x for x, _ in trace] == list(range(1000, 1101))
    assert [y for _, y in trace] == pytest.approx([(s % 7) / 7 for s in range(1000, 1101)],
                                                  abs=1e-6)
