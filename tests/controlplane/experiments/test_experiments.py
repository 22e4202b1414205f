"""GET /api/v1/experiments/[{id}/], /api/v1/runs/[{id}/] and results export."""
import csv
import io

import pytest

from controlplane.experiments import actions
from controlplane.experiments.models import Job
from controlplane.metrics.actions import ingest_metrics


def point(name, step, value):
    return {"name": name, "step": step, "value": value, "sim_time_s": step * 1.5,
            "wall_time_s": step * 0.1}


@pytest.fixture
def experiment(owner, device_factory, experiment_factory, method_with_baseline):
    """An experiment of a method and one baseline, hosted by the owner's device."""
    host = device_factory(owner).device
    return experiment_factory(owner, host=host, algorithm=method_with_baseline.name,
                              baselines=method_with_baseline.baselines[:1], name="compare")


@pytest.mark.django_db
class TestExperimentList:
    def test_it_lists_the_owners_experiments_newest_first(self, api, owner, device_factory,
                                                          experiment_factory):
        host = device_factory(owner).device
        experiment_factory(owner, host=host, name="first")
        experiment_factory(owner, host=host, name="second")
        listed = api(owner).get("/api/v1/experiments/").json()["results"]
        assert [e["name"] for e in listed] == ["second", "first"]
        assert listed[0]["runs"][0]["job"]["device_name"] == host.name

    def test_it_hides_other_users_experiments(self, api, teammate, outsider, experiment):
        assert api(teammate).get("/api/v1/experiments/").json()["results"] == []
        assert api(outsider).get("/api/v1/experiments/").json()["results"] == []

    def test_it_refuses_anonymous_users(self, api):
        assert api().get("/api/v1/experiments/").status_code == 401


@pytest.mark.django_db
class TestExperimentDetail:
    def test_it_shows_runs_and_jobs(self, api, owner, experiment):
        body = api(owner).get(f"/api/v1/experiments/{experiment.id}/").json()
        assert body["methods"] == [run["method"] for run in body["runs"]]
        assert all(run["job"]["state"] == "queued" for run in body["runs"])

    def test_it_is_404_for_other_users(self, api, teammate, outsider, experiment):
        for user in (teammate, outsider):
            assert api(user).get(f"/api/v1/experiments/{experiment.id}/").status_code == 404

    def test_it_does_not_allow_changes(self, api, owner, experiment):
        url = f"/api/v1/experiments/{experiment.id}/"
        assert api(owner).patch(url, {"name": "x"}).status_code == 405
        assert api(owner).delete(url).status_code == 405


@pytest.mark.django_db
class TestRuns:
    def test_it_lists_runs_of_one_experiment(self, api, owner, experiment, experiment_factory):
        experiment_factory(owner, host=Job.objects.first().device)
        runs = api(owner).get(f"/api/v1/runs/?experiment={experiment.id}").json()["results"]
        assert [run["experiment"] for run in runs] == [str(experiment.id)] * 2
        assert api(owner).get("/api/v1/runs/").json()["count"] == 3

    def test_it_rejects_a_bad_filter(self, api, owner):
        response = api(owner).get("/api/v1/runs/?experiment=nope")
        assert response.status_code == 400
        assert "experiment" in response.json()

    def test_it_hides_other_users_runs(self, api, outsider, experiment):
        run = experiment.runs.first()
        assert api(outsider).get("/api/v1/runs/").json()["results"] == []
        assert api(outsider).get(f"/api/v1/runs/{run.id}/").status_code == 404


@pytest.mark.django_db
class TestResults:
    @pytest.fixture
    def measured(self, experiment):
        first, second = experiment.runs.order_by("position")
        ingest_metrics(first, [point("accuracy", 1, 0.5), point("accuracy", 2, 0.8),
                               point("loss", 2, 0.3)])
        ingest_metrics(second, [point("accuracy", 1, 0.6)])
        actions.start_job(first.job)
        actions.finish_job(first.job, "succeeded", "", {})
        return experiment, first, second

    def test_it_gives_the_final_value_of_each_metric(self, api, owner, measured):
        experiment, first, second = measured
        body = api(owner).get(f"/api/v1/experiments/{experiment.id}/results/").json()
        assert body["metrics"] == ["accuracy", "loss"]
        assert body["runs"] == [
            {"run": str(first.id), "method": first.method, "state": "succeeded",
             "final": {"accuracy": 0.8, "loss": 0.3}},
            {"run": str(second.id), "method": second.method, "state": "queued",
             "final": {"accuracy": 0.6}},
        ]

    def test_it_exports_csv(self, api, owner, measured):
        experiment, first, second = measured
        response = api(owner).get(f"/api/v1/experiments/{experiment.id}/results/?format=csv")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        assert "attachment" in response["Content-Disposition"]
        rows = list(csv.reader(io.StringIO(response.content.decode())))
        assert rows == [["run", "method", "state", "accuracy", "loss"],
                        [str(first.id), first.method, "succeeded", "0.8", "0.3"],
                        [str(second.id), second.method, "queued", "0.6", ""]]

    def test_it_is_404_for_other_users_in_any_format(self, api, outsider, measured):
        experiment, *_ = measured
        url = f"/api/v1/experiments/{experiment.id}/results/"
        assert api(outsider).get(url).status_code == 404
        assert api(outsider).get(url + "?format=csv").status_code == 404
