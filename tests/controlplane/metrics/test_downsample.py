"""Downsampled series (the WebSocket history's rule) and step ranges, through the API."""
import pytest

from controlplane.metrics.actions import ingest_metrics
from controlplane.metrics.consumers import build_history
from controlplane.metrics.downsample import HISTORY_BUCKETS
from tests.controlplane.metrics.points import point


def metrics(run) -> str:
    return f"/api/v1/runs/{run.id}/metrics/"


def spiky(step: int) -> float:
    """A series with one spike up (step 777) and one down (step 4321) among smooth values."""
    return {777: 100.0, 4321: -100.0}.get(step, (step % 50) / 50)


@pytest.fixture
def long_run(hosted_run):
    _, run = hosted_run
    ingest_metrics(run, [point("loss", step, spiky(step)) for step in range(10_000)]
                   + [point("accuracy", step, step / 10) for step in range(50)])
    return run


def series(body: dict, name: str) -> list[tuple[int, float]]:
    return [(p["step"], p["value"]) for p in body["points"] if p["name"] == name]


@pytest.mark.django_db
class TestDownsampledSeries:
    def test_it_keeps_extremes_and_ends_within_two_points_a_bucket(self, api, owner, long_run):
        body = api(owner).get(metrics(long_run) + "?buckets=100").json()
        loss = series(body, "loss")
        assert body["downsampled"] == ["loss"]
        assert len(loss) <= 2 * 100 + 2
        assert (777, 100.0) in loss and (4321, -100.0) in loss  # the spikes survive
        assert loss[0][0] == 0 and loss[-1][0] == 9_999  # the ends too
        assert [step for step, _ in loss] == sorted({step for step, _ in loss})
        # A short series comes whole.
        assert series(body, "accuracy") == [(step, step / 10) for step in range(50)]

    def test_each_bucket_holds_its_min_and_max(self, api, owner, long_run):
        loss = series(api(owner).get(metrics(long_run) + "?name=loss&buckets=100").json(),
                      "loss")
        width = 100  # 10,000 steps in 100 buckets
        for bucket in (0, 42, 99):
            steps = range(bucket * width, (bucket + 1) * width)
            kept = [value for step, value in loss if step in steps]
            values = [spiky(step) for step in steps]
            assert min(kept) == min(values) and max(kept) == max(values)

    def test_a_zoomed_range_comes_at_full_resolution(self, api, owner, long_run):
        body = api(owner).get(metrics(long_run) + "?name=loss&from_step=4000&to_step=4999"
                              "&buckets=1000").json()
        assert series(body, "loss") == [(step, spiky(step)) for step in range(4000, 5000)]
        assert body["downsampled"] == []

    def test_without_buckets_every_point_comes(self, api, owner, long_run):
        body = api(owner).get(metrics(long_run) + "?name=loss&since_step=9000").json()
        assert [step for step, _ in series(body, "loss")] == list(range(9001, 10_000))

    @pytest.mark.parametrize("query, field", [
        ("buckets=0", "buckets"), ("buckets=10001", "buckets"), ("from_step=-1", "from_step"),
        ("from_step=5&to_step=4", "to_step"), ("to_step=x", "to_step")])
    def test_it_rejects_bad_ranges(self, api, owner, long_run, query, field):
        response = api(owner).get(f"{metrics(long_run)}?{query}")
        assert response.status_code == 400
        assert field in response.json()

    def test_the_websocket_history_uses_the_same_rule(self, api, owner, long_run):
        history = build_history(long_run.experiment_id)
        rows = history["points"][str(long_run.id)]
        api_rows = api(owner).get(metrics(long_run) + f"?buckets={HISTORY_BUCKETS}").json()
        assert rows == [[p["name"], p["step"], p["value"], p["sim_time_s"], p["wall_time_s"]]
                        for p in api_rows["points"]]
        assert history["downsampled"] == {str(long_run.id): ["loss"]}
