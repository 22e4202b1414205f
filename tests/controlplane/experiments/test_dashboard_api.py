"""What the dashboard reads from the API: list search/filter/sort, per-step exports, the queue
reason of a queued run, duration, and every creation error at once."""
import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.experiments import actions
from controlplane.experiments.models import Experiment, Job
from controlplane.experiments.queueing import queue_reason
from controlplane.experiments.results import main_metrics
from controlplane.metrics.models import MetricPoint

pytestmark = pytest.mark.django_db


def points(run, rows):
    MetricPoint.objects.bulk_create([
        MetricPoint(run=run, name=name, step=step, value=value, sim_time_s=step, wall_time_s=step)
        for name, step, value in rows])


class TestExperimentList:
    def test_it_searches_filters_by_date_and_sorts(self, api, owner, outsider, device_factory,
                                                   experiment_factory):
        host = device_factory(owner).device
        zeta = experiment_factory(owner, host, name="zeta run", preset="local-3")
        alpha = experiment_factory(owner, host, name="Alpha run", preset="local-3",
                                   algorithm="splitfed", baselines=["fedavg"])
        old = experiment_factory(owner, host, name="old one", preset="local-3")
        Experiment.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(days=10))
        experiment_factory(outsider, device_factory(outsider).device, name="alpha theirs",
                           preset="local-3")
        client = api(owner)

        def names(query: str) -> list[str]:
            response = client.get(f"/api/v1/experiments/?{query}")
            assert response.status_code == 200, response.json()
            return [e["name"] for e in response.json()["results"]]

        assert names("search=ALPHA") == ["Alpha run"]
        assert names("search=fedavg&ordering=name") == ["Alpha run", "old one", "zeta run"]
        assert names("ordering=-name") == ["zeta run", "old one", "Alpha run"]
        assert names(f"created_before={(timezone.now() - timedelta(days=5)).date()}") == [
            "old one"]
        assert names(f"created_after={timezone.now().date()}&ordering=created") == [
            "zeta run", "Alpha run"]
        Experiment.objects.filter(pk=zeta.pk).update(
            status="succeeded", finished_at=zeta.created + timedelta(seconds=5))
        assert names("ordering=-duration") == ["old one", "zeta run", "Alpha run"]
        assert client.get(f"/api/v1/experiments/{zeta.id}/").json()["duration_s"] == 5.0
        assert alpha  # listed above

    @pytest.mark.parametrize("query, field", [
        ("ordering=size", "ordering"), ("created_after=yesterday", "created_after"),
        ("created_after=2026-02-02&created_before=2026-02-01", "created_before")])
    def test_it_names_a_bad_parameter(self, api, owner, query, field):
        response = api(owner).get(f"/api/v1/experiments/?{query}")
        assert response.status_code == 400
        assert field in response.json()

    def test_it_finds_each_experiments_main_metric(self, owner, device_factory,
                                                   experiment_factory):
        host = device_factory(owner).device
        with_accuracy = experiment_factory(owner, host, preset="local-3")
        with_loss = experiment_factory(owner, host, preset="local-3")
        points(with_accuracy.runs.get(), [("loss", 1, 2.0), ("accuracy", 1, 0.4),
                                          ("accuracy", 2, 0.7)])
        points(with_loss.runs.get(), [("loss", 1, 2.0), ("loss", 3, 1.5)])
        assert main_metrics([with_accuracy.id, with_loss.id]) == {
            with_accuracy.id: ("accuracy", 0.7), with_loss.id: ("loss", 1.5)}


class TestPerStepExports:
    def test_it_exports_every_point_of_an_experiment_and_a_run(self, api, owner, outsider,
                                                              device_factory,
                                                              experiment_factory):
        experiment = experiment_factory(owner, device_factory(owner).device, preset="local-3",
                                        algorithm="splitfed", baselines=["fedavg"],
                                        name="=cmd")
        split, fed = experiment.runs.order_by("position")
        points(split, [("accuracy", 1, 0.5), ("accuracy", 2, 0.75), ("loss", 1, 1.25)])
        points(fed, [("accuracy", 1, 0.25)])
        client = api(owner)
        body = client.get(f"/api/v1/experiments/{experiment.id}/points/").json()
        assert [(p["method"], p["name"], p["step"], p["value"]) for p in body["points"]] == [
            ("splitfed", "accuracy", 1, 0.5), ("splitfed", "accuracy", 2, 0.75),
            ("splitfed", "loss", 1, 1.25), ("fedavg", "accuracy", 1, 0.25)]

        response = client.get(f"/api/v1/experiments/{experiment.id}/points/?format=csv")
        assert response["Content-Type"].startswith("text/csv")
        assert "attachment" in response["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(response.content.decode())))
        assert [(r["run"], r["name"], r["step"], r["value"]) for r in rows] == [
            (str(p["run"]), p["name"], str(p["step"]), str(p["value"])) for p in body["points"]]

        run_rows = list(csv.DictReader(io.StringIO(client.get(
            f"/api/v1/runs/{fed.id}/metrics/?format=csv").content.decode())))
        assert [(r["method"], r["name"], r["value"]) for r in run_rows] == [
            ("fedavg", "accuracy", "0.25")]
        assert api(outsider).get(f"/api/v1/experiments/{experiment.id}/points/"
                                 ).status_code == 404
        assert api(outsider).get(f"/api/v1/runs/{fed.id}/metrics/?format=csv").status_code == 404


class TestQueueReason:
    def test_it_says_where_a_queued_run_stands_and_what_holds_the_device(
            self, api, owner, device_factory, experiment_factory):
        host = device_factory(owner, name="cloud-09").device
        first = experiment_factory(owner, host, preset="local-3", name="first")
        second = experiment_factory(owner, host, preset="local-3", name="second",
                                    algorithm="splitfed", baselines=["fedavg"])
        split, fed = second.runs.order_by("position")
        assert queue_reason(split) == "Position 2 of 3 in cloud-09's queue; 1 job(s) ahead."
        actions.start_job(Job.objects.get(run__experiment=first))
        split.refresh_from_db()
        assert queue_reason(split) == (
            "Position 1 of 2 in cloud-09's queue; cloud-09 is running fedavg of “first”.")
        run = api(owner).get(f"/api/v1/runs/{fed.id}/").json()
        assert run["queue_reason"] == (
            "Position 2 of 2 in cloud-09's queue; cloud-09 is running fedavg of “first”.")
        running = first.runs.get()
        assert queue_reason(running) == ""
        host.last_seen = None
        host.save(update_fields=["last_seen"])
        assert queue_reason(split).startswith("The agent is offline (last heartbeat: never). "
                                              "Position 1 of 2")


class TestEveryErrorAtOnce:
    def test_it_reports_field_and_config_errors_together(self, api, owner, device_factory):
        device_factory(owner)
        response = api(owner).post("/api/v1/experiments/", {
            "name": "", "algorithm": "splitfed", "preset": "local-3",
            "config": {"rounds": -1, "batch_size": 0}}, format="json")
        assert response.status_code == 400
        errors = response.json()
        assert set(errors) == {"name", "config"}
        assert set(errors["config"]) == {"rounds", "batch_size"}
