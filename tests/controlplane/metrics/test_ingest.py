"""POST and GET /api/v1/runs/{id}/metrics/ and /logs/."""
import json

import pytest

from controlplane.experiments import actions
from controlplane.metrics.models import MetricPoint, RunLog
from tests.controlplane.metrics.points import point


def metrics(run) -> str:
    return f"/api/v1/runs/{run.id}/metrics/"


def logs(run) -> str:
    return f"/api/v1/runs/{run.id}/logs/"


def stored(run) -> list[tuple]:
    return list(MetricPoint.objects.filter(run=run).order_by("name", "step")
                .values_list("name", "step", "value", "sim_time_s", "wall_time_s"))


@pytest.mark.django_db
class TestMetricsIngest:
    def test_it_stores_a_batch(self, api, hosted_run):
        agent, run = hosted_run
        batch = [point(step=1, value=0.5), point(step=2, value=0.7), point("loss", 1, 1.25)]
        response = api(device=agent.credential).post(metrics(run), {"points": batch})
        assert response.status_code == 200
        assert response.json() == {"accepted": 3, "cancelled": False}
        assert stored(run) == [("accuracy", 1, 0.5, 2.0, 0.25), ("accuracy", 2, 0.7, 4.0, 0.5),
                               ("loss", 1, 1.25, 2.0, 0.25)]

    def test_it_stores_every_value_exactly(self, api, hosted_run):
        # PostgreSQL's bulk insert carries numbers as JSON text (controlplane.metrics.bulk).
        agent, run = hosted_run
        values = [0.1, 1 / 3, -2 / 3, 1e-300, 5e-324, 2.2250738585072014e-308,
                  1.7976931348623157e308, 123456789.12345679, -0.0]
        batch = [{"name": "exact", "step": step, "value": value, "sim_time_s": abs(value),
                  "wall_time_s": 1e15 + step} for step, value in enumerate(values)]
        assert api(device=agent.credential).post(metrics(run), {"points": batch}).status_code \
            == 200
        assert stored(run) == [("exact", step, value, abs(value), 1e15 + step)
                               for step, value in enumerate(values)]

    def test_it_never_duplicates_a_retried_batch(self, api, hosted_run):
        agent, run = hosted_run
        batch = {"points": [point(step=step) for step in range(1, 51)]}
        for _ in range(3):
            assert api(device=agent.credential).post(metrics(run), batch).json()["accepted"] == 50
        assert MetricPoint.objects.filter(run=run).count() == 50

    def test_it_keeps_the_first_value_of_a_step(self, api, hosted_run):
        agent, run = hosted_run
        client = api(device=agent.credential)
        client.post(metrics(run), {"points": [point(step=1, value=0.1), point(step=1, value=0.2)]})
        client.post(metrics(run), {"points": [point(step=1, value=0.3)]})
        assert [row[2] for row in stored(run)] == [0.1]

    def test_it_takes_a_full_batch_of_5000(self, api, hosted_run):
        agent, run = hosted_run
        batch = {"points": [point("loss", step, 1 / (step + 1)) for step in range(5000)]}
        assert api(device=agent.credential).post(metrics(run), batch).status_code == 200
        assert MetricPoint.objects.filter(run=run).count() == 5000

    def test_it_rejects_an_oversized_batch(self, api, hosted_run):
        agent, run = hosted_run
        batch = {"points": [point(step=step) for step in range(5001)]}
        response = api(device=agent.credential).post(metrics(run), batch)
        assert response.status_code == 400
        assert "points" in response.json()
        assert not MetricPoint.objects.exists()

    @pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
    def test_it_rejects_non_finite_values_naming_the_point(self, api, hosted_run, literal):
        agent, run = hosted_run
        raw = json.dumps({"points": [point(step=1), point(step=2, value="?")]}).replace(
            '"?"', literal)
        assert literal in raw
        response = api(device=agent.credential).post(metrics(run), raw,
                                                     content_type="application/json")
        assert response.status_code == 400
        assert "finite" in response.json()["points"]["1"]["value"][0]
        assert not MetricPoint.objects.exists()  # the whole batch is refused

    @pytest.mark.parametrize("bad, field", [
        ({"step": -1}, "step"),
        ({"step": 1.5}, "step"),
        ({"value": "high"}, "value"),
        ({"value": True}, "value"),
        ({"sim_time_s": -1}, "sim_time_s"),
        ({"name": ""}, "name"),
        ({"name": "acc uracy"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"colour": "red"}, "colour"),
    ])
    def test_it_rejects_malformed_points(self, api, hosted_run, bad, field):
        agent, run = hosted_run
        response = api(device=agent.credential).post(
            metrics(run), {"points": [point(step=1), {**point(step=2), **bad}]})
        assert response.status_code == 400
        assert field in response.json()["points"]["1"]
        assert not MetricPoint.objects.exists()

    def test_it_rejects_a_point_missing_a_field(self, api, hosted_run):
        agent, run = hosted_run
        incomplete = point()
        del incomplete["wall_time_s"]
        response = api(device=agent.credential).post(metrics(run), {"points": [incomplete]})
        assert response.status_code == 400
        assert "wall_time_s" in response.json()["points"]["0"]

    @pytest.mark.parametrize("payload", [{}, {"points": "many"}, [1, 2], {"points": [1]}])
    def test_it_rejects_malformed_batches(self, api, hosted_run, payload):
        agent, run = hosted_run
        response = api(device=agent.credential).post(metrics(run), payload)
        assert response.status_code == 400

    def test_it_tells_the_agent_when_the_run_was_cancelled(self, api, hosted_run):
        agent, run = hosted_run
        actions.start_job(run.job)
        actions.cancel_experiment(run.experiment)
        response = api(device=agent.credential).post(metrics(run), {"points": [point()]})
        assert response.json() == {"accepted": 1, "cancelled": True}
        assert MetricPoint.objects.count() == 1  # what was measured is kept

    def test_it_is_403_for_another_device(self, api, owner, outsider, hosted_run,
                                          device_factory):
        _, run = hosted_run
        for other in (device_factory(owner), device_factory(outsider)):
            response = api(device=other.credential).post(metrics(run), {"points": [point()]})
            assert response.status_code == 403
        assert not MetricPoint.objects.exists()

    def test_it_refuses_users_and_anonymous_posts(self, api, owner, hosted_run):
        _, run = hosted_run
        assert api(owner).post(metrics(run), {"points": [point()]}).status_code == 403
        assert api().post(metrics(run), {"points": [point()]}).status_code == 401
        assert not MetricPoint.objects.exists()


@pytest.mark.django_db
class TestMetricsRead:
    @pytest.fixture
    def run(self, api, hosted_run):
        agent, run = hosted_run
        api(device=agent.credential).post(metrics(run), {"points": [
            point("loss", 2, 0.5), point("accuracy", 1, 0.4), point("loss", 1, 0.9),
            point("accuracy", 2, 0.6)]})
        return run

    def test_it_returns_the_series_in_order(self, api, owner, run):
        body = api(owner).get(metrics(run)).json()
        assert body["run"] == str(run.id)
        assert [(p["name"], p["step"], p["value"]) for p in body["points"]] == [
            ("accuracy", 1, 0.4), ("accuracy", 2, 0.6), ("loss", 1, 0.9), ("loss", 2, 0.5)]
        assert set(body["points"][0]) == {"name", "step", "value", "sim_time_s", "wall_time_s"}

    def test_it_filters_by_name_and_step(self, api, owner, run):
        body = api(owner).get(metrics(run) + "?name=loss&since_step=1").json()
        assert [(p["name"], p["step"]) for p in body["points"]] == [("loss", 2)]

    @pytest.mark.parametrize("query, field", [("since_step=-1", "since_step"),
                                              ("since_step=abc", "since_step"),
                                              ("name=a%20b", "name")])
    def test_it_rejects_bad_filters(self, api, owner, run, query, field):
        response = api(owner).get(f"{metrics(run)}?{query}")
        assert response.status_code == 400
        assert field in response.json()

    def test_it_is_404_for_other_users(self, api, teammate, outsider, run):
        assert api(teammate).get(metrics(run)).status_code == 404
        assert api(outsider).get(metrics(run)).status_code == 404

    def test_it_refuses_devices(self, api, hosted_run, run):
        agent, _ = hosted_run
        assert api(device=agent.credential).get(metrics(run)).status_code == 403


@pytest.mark.django_db
class TestLogs:
    def test_it_appends_and_returns_lines(self, api, owner, hosted_run):
        agent, run = hosted_run
        client = api(device=agent.credential)
        batch = {"first_seq": 0, "lines": ["round 1", "round 2"]}
        assert client.post(logs(run), batch).status_code == 200
        client.post(logs(run), {"first_seq": 2, "lines": ["  indented"]})
        lines = api(owner).get(logs(run)).json()["lines"]
        assert [line["line"] for line in lines] == ["round 1", "round 2", "  indented"]
        newer = api(owner).get(f"{logs(run)}?after={lines[0]['id']}").json()["lines"]
        assert [line["line"] for line in newer] == ["round 2", "  indented"]

    def test_it_stores_a_retried_batch_once(self, api, owner, hosted_run):
        agent, run = hosted_run
        client = api(device=agent.credential)
        client.post(logs(run), {"first_seq": 0, "lines": ["round 1", "round 2"]})
        # The answer was lost; the agent resends with the next line appended.
        answer = client.post(logs(run), {"first_seq": 0, "lines": ["round 1", "round 2", "done"]})
        assert answer.status_code == 200
        assert list(RunLog.objects.filter(run=run).order_by("seq").values_list("seq", "line")) == [
            (0, "round 1"), (1, "round 2"), (2, "done")]

    @pytest.mark.parametrize("payload", [{"first_seq": 0, "lines": ["x"] * 1001},
                                         {"first_seq": 0, "lines": ["x" * 10_001]},
                                         {"first_seq": 0, "lines": [None]},
                                         {"first_seq": 0, "lines": ["nul\x00"]},
                                         {"first_seq": 0}])
    def test_it_rejects_bad_batches(self, api, hosted_run, payload):
        agent, run = hosted_run
        response = api(device=agent.credential).post(logs(run), payload)
        assert response.status_code == 400
        assert "lines" in response.json()
        assert not RunLog.objects.exists()

    @pytest.mark.parametrize("first_seq", [None, -1, "one", 2**53 + 1])
    def test_it_rejects_a_bad_first_seq(self, api, hosted_run, first_seq):
        agent, run = hosted_run
        body = {"lines": ["x"]} if first_seq is None else {"first_seq": first_seq, "lines": ["x"]}
        response = api(device=agent.credential).post(logs(run), body)
        assert response.status_code == 400
        assert "first_seq" in response.json()
        assert not RunLog.objects.exists()

    def test_it_is_403_for_another_device_and_404_for_other_users(
            self, api, owner, outsider, hosted_run, device_factory):
        _, run = hosted_run
        other = device_factory(owner)
        batch = {"first_seq": 0, "lines": ["x"]}
        assert api(device=other.credential).post(logs(run), batch).status_code == 403
        assert api(outsider).get(logs(run)).status_code == 404
        assert not RunLog.objects.exists()


@pytest.fixture
def broker_down(settings):
    """The channel layer points at a port nothing listens on (connections are refused)."""
    from tests.fixtures.servers import free_port

    layer = settings.CHANNEL_LAYERS["default"]
    host = {**layer["CONFIG"]["hosts"][0], "address": f"redis://127.0.0.1:{free_port()}/0"}
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {**layer["CONFIG"],
                                                               "hosts": [host]}}}


@pytest.mark.django_db
class TestWithTheBrokerDown:
    """Publishing is best-effort: what was committed answers 2xx, the failure is counted."""

    def test_metrics_are_stored_and_answered_200(self, api, hosted_run, broker_down,
                                                 django_capture_on_commit_callbacks):
        from controlplane.metrics.events import drain, publish_failures

        agent, run = hosted_run
        before = publish_failures()
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = api(device=agent.credential).post(metrics(run), {"points": [point()]})
        assert response.status_code == 200
        assert len(callbacks) == 1
        assert drain()  # the publish ran, and failed
        assert publish_failures() == before + 1
        assert len(stored(run)) == 1

    def test_log_lines_and_job_changes_answer_2xx(self, api, hosted_run, broker_down,
                                                  django_capture_on_commit_callbacks):
        from controlplane.metrics.events import drain, publish_failures

        agent, run = hosted_run
        client = api(device=agent.credential)
        before = publish_failures()
        with django_capture_on_commit_callbacks(execute=True):
            started = client.post(f"/api/v1/agents/jobs/{run.job.id}/start/", {})
            logged = client.post(logs(run), {"first_seq": 0, "lines": ["round 1"]})
            finished = client.post(f"/api/v1/agents/jobs/{run.job.id}/finish/",
                                   {"state": "succeeded", "error": "", "result": {}})
        assert [started.status_code, logged.status_code, finished.status_code] == [200] * 3
        assert drain()
        assert publish_failures() == before + 3
        run.refresh_from_db()
        assert run.state == "succeeded"
        assert list(RunLog.objects.filter(run=run).values_list("line", flat=True)) == ["round 1"]


@pytest.mark.django_db
class TestMetricsIngestEdges:
    """The plain-Python batch check names the same fields as the serializer did."""

    @pytest.mark.parametrize("bad, field, words", [
        ({"value": 10**400}, "value", "finite"),
        ({"step": True}, "step", "integer"),
        ({"wall_time_s": "1"}, "wall_time_s", "number"),
        ({"name": 7}, "name", "string"),
    ])
    def test_it_names_the_point_and_field(self, api, hosted_run, bad, field, words):
        agent, run = hosted_run
        body = {"points": [point(step=1), point(step=2), {**point(step=3), **bad}]}
        response = api(device=agent.credential).post(metrics(run), body)
        assert response.status_code == 400
        assert words in response.json()["points"]["2"][field][0]
        assert not MetricPoint.objects.exists()

    def test_integers_are_stored_as_numbers(self, api, hosted_run):
        agent, run = hosted_run
        body = {"points": [{"name": "loss", "step": 3, "value": 2, "sim_time_s": 0,
                            "wall_time_s": 1}]}
        assert api(device=agent.credential).post(metrics(run), body).status_code == 200
        assert stored(run) == [("loss", 3, 2.0, 0.0, 1.0)]
