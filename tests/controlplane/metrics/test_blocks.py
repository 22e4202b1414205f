"""Per-block extremes kept at ingestion, and downsampling from them: the same points as from
every stored point, for whole series and step ranges."""
import random

import pytest

from controlplane.metrics import blocks, downsample
from controlplane.metrics.actions import ingest_for_device
from controlplane.metrics.models import BLOCK_STEPS, MetricBlock
from tests.controlplane.metrics.points import point

STEPS = 40_000


def block_table(run) -> list[tuple]:
    return list(MetricBlock.objects.filter(run=run).order_by("name", "block")
                .values_list("name", "block", *blocks.STAT_COLUMNS))


@pytest.fixture
def ragged_run(hosted_run):
    """A series with gaps, ties (values from a small set) and batches sent out of order, twice,
    overlapping, with a changed value in the resend (first value wins)."""
    agent, run = hosted_run

    def ingest_metrics(run, points):  # as the API does (on PostgreSQL: blocks folded in SQL)
        assert ingest_for_device(agent.device, run.id, points) is not None

    rng = random.Random(20)
    steps = [step for step in range(STEPS) if rng.random() < 0.9]
    values = {step: float(rng.choice([-3, -1, 0, 0, 1, 2, 5])) for step in steps}
    batches = [steps[i:i + 700] for i in range(0, len(steps), 500)]  # overlapping batches
    rng.shuffle(batches)
    for chunk in batches + batches[:5]:
        ingest_metrics(run, [point("loss", step, values[step]) for step in chunk])
    ingest_metrics(run, [point("loss", steps[3], 99.0)])  # already stored: ignored
    ingest_metrics(run, [point("short", step, step) for step in range(10)])
    return run, steps, values


@pytest.mark.django_db
class TestBlocks:
    def test_ingestion_keeps_them_equal_to_a_rebuild_from_the_points(self, ragged_run):
        run, steps, values = ragged_run
        kept = block_table(run)
        blocks.rebuild([run.id])
        assert block_table(run) == kept
        loss = [row for row in kept if row[0] == "loss"]
        assert sum(row[2] for row in loss) == len(steps)
        first = [step for step in steps if step < BLOCK_STEPS]
        lowest = min(first, key=lambda step: (values[step], step))
        assert loss[0][:6] == ("loss", 0, len(first), first[0], first[-1], lowest)

    @pytest.mark.parametrize("buckets, from_step, to_step", [
        (100, None, None), (250, None, None), (17, None, None), (100, 1_234, 33_333),
        (60, 5_000, 12_000), (1000, None, None)])
    def test_downsampling_from_blocks_equals_from_points(self, ragged_run, monkeypatch, buckets,
                                                         from_step, to_step):
        run, _, _ = ragged_run
        [series] = downsample.series_of([run.id], "loss", from_step, to_step)
        width = downsample._width(series, buckets)
        from_blocks = downsample.series_rows(series, buckets, from_step, to_step)
        monkeypatch.setattr(downsample, "BLOCK_STEPS", 10**9)  # every point, in the database
        from_points = downsample.series_rows(series, buckets, from_step, to_step)
        assert from_blocks == from_points
        assert len(from_points) <= 2 * buckets + 2
        assert (width >= 2 * BLOCK_STEPS) == (buckets <= 250)  # both paths were taken

    def test_series_sizes_come_from_the_blocks(self, ragged_run):
        run, steps, _ = ragged_run
        whole = {s.name: s for s in downsample.series_of([run.id])}
        assert (whole["loss"].count, whole["loss"].first_step, whole["loss"].last_step) == (
            len(steps), steps[0], steps[-1])
        assert (whole["short"].count, whole["short"].first_step) == (10, 0)
        [ranged] = downsample.series_of([run.id], "loss", 100, 199)
        assert ranged.count == len([step for step in steps if 100 <= step <= 199])
