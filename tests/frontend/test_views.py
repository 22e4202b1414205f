"""The dashboard's pages as a browser gets them: login required, own objects only."""
import csv
import io
import json
import uuid
from pathlib import Path

import plotly
import pytest
from django.templatetags.static import static
from django.test import Client

from controlplane.metrics.actions import ingest_metrics
from ml import registry

PLOTLY_BUNDLE = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

PAGES = ["/devices/", "/experiments/", "/experiments/new/", "/results/", "/compare/",
         "/results/export.csv", "/results/export.json"]


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def point(name, step, value, sim_time_s=None):
    return {"name": name, "step": step, "value": value,
            "sim_time_s": float(step) if sim_time_s is None else sim_time_s,
            "wall_time_s": step / 10}


@pytest.fixture
def experiment(owner, device_factory, experiment_factory):
    """A splitfed experiment with its fedavg baseline, with a few points in each run."""
    host = device_factory(owner, name="cloud-1").device
    experiment = experiment_factory(owner, host, algorithm="splitfed", baselines=["fedavg"],
                                    config={"rounds": 3}, name="split vs fed")
    split, fed = experiment.runs.order_by("position")
    ingest_metrics(split, [point("accuracy", 0, 0.5), point("accuracy", 1, 0.75),
                           point("traffic_bytes/features", 1, 10.0)])
    ingest_metrics(fed, [point("accuracy", 0, 0.4), point("accuracy", 1, 0.6),
                         point("loss", 1, 1.25)])
    return experiment


@pytest.mark.django_db
class TestLoginRequired:
    @pytest.mark.parametrize("path", PAGES)
    def test_it_sends_anonymous_users_to_login(self, path):
        response = Client().get(path)
        assert response.status_code == 302
        assert response["Location"] == f"/accounts/login/?next={path}"

    def test_it_sends_anonymous_users_to_login_from_an_experiment(self, experiment):
        response = Client().get(f"/experiments/{experiment.id}/")
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")

    def test_it_logs_in_with_the_form(self, owner):
        from tests.fixtures.servers import PASSWORD

        client = Client()
        response = client.post("/accounts/login/?next=/devices/",
                               {"username": owner.username, "password": PASSWORD,
                                "next": "/devices/"})
        assert response.status_code == 302 and response["Location"] == "/devices/"
        assert client.get("/devices/").status_code == 200

    def test_it_refuses_a_wrong_password(self, owner):
        response = Client().post("/accounts/login/", {"username": owner.username,
                                                      "password": "wrong"})
        assert response.status_code == 200
        assert b"Please enter a correct username and password" in response.content


@pytest.mark.django_db
class TestOwnObjectsOnly:
    def test_it_lists_only_own_devices(self, owner, outsider, device_factory):
        device_factory(owner, name="mine-1")
        device_factory(outsider, name="theirs-1")
        page = logged_in(owner).get("/devices/").content.decode()
        assert "mine-1" in page and "theirs-1" not in page

    def test_it_lists_only_own_experiments(self, experiment, outsider):
        assert b"split vs fed" in logged_in(experiment.owner).get("/experiments/").content
        assert b"split vs fed" not in logged_in(outsider).get("/experiments/").content

    def test_it_hides_other_users_experiment(self, experiment, outsider, teammate):
        for user in (outsider, teammate):
            assert logged_in(user).get(f"/experiments/{experiment.id}/").status_code == 404

    def test_it_hides_other_users_runs_from_compare(self, experiment, outsider):
        run_ids = ",".join(str(run.id) for run in experiment.runs.all())
        assert logged_in(outsider).get(f"/compare/?runs={run_ids}").status_code == 404

    def test_it_leaves_other_users_runs_out_of_results_and_exports(self, experiment, outsider):
        client = logged_in(outsider)
        assert b"split vs fed" not in client.get("/results/").content
        rows = list(csv.reader(io.StringIO(client.get("/results/export.csv").content.decode())))
        assert rows == [["experiment", "experiment_name", "algorithm", "run", "method", "state"]]
        assert json.loads(client.get("/results/export.json").content)["runs"] == []


@pytest.mark.django_db
class TestPages:
    def test_it_renders_the_experiment_page_with_its_runs(self, experiment):
        response = logged_in(experiment.owner).get(f"/experiments/{experiment.id}/")
        page = response.content.decode()
        assert response.status_code == 200
        assert page.count('class="run-card"') == 2
        data = response.context["page_data"]
        assert data["ws_path"] == f"/ws/experiments/{experiment.id}/"
        assert data["cancel_url"] == f"/api/v1/experiments/{experiment.id}/cancel/"

    def test_a_reruns_page_links_its_original_and_compares_code_versions(self, experiment):
        from controlplane.experiments import actions
        from controlplane.experiments.models import Job

        rerun = actions.rerun_experiment(experiment.owner, experiment)
        page = logged_in(experiment.owner).get(f"/experiments/{rerun.id}/").content.decode()
        assert f'href="/experiments/{experiment.id}/"' in page
        assert "code version not known yet" in page
        for target, version in ((experiment, "git:aaa"), (rerun, "git:bbb")):
            for job in Job.objects.filter(run__experiment=target):
                actions.start_job(job, {"code_version": version, "python": "3.11",
                                        "packages": {}})
        page = logged_in(experiment.owner).get(f"/experiments/{rerun.id}/").content.decode()
        assert "ran another code version" in page
        original = logged_in(experiment.owner).get(f"/experiments/{experiment.id}/")
        assert 'id="rerun-of"' not in original.content.decode()
        assert original.context["page_data"]["rerun_url"] == \
            f"/api/v1/experiments/{experiment.id}/rerun/"

    def test_it_compares_runs_given_as_a_comma_list(self, experiment):
        split, fed = experiment.runs.order_by("position")
        response = logged_in(experiment.owner).get(f"/compare/?runs={fed.id},{split.id}")
        assert response.status_code == 200
        assert [run["label"] for run in response.context["page_data"]["runs"]] == [
            "split vs fed · fedavg", "split vs fed · splitfed"]
        # Per-entity series stay out of the on-screen table.
        assert response.context["metrics"] == ["accuracy", "loss"]
        assert [row["values"] for row in response.context["runs"]] == [[0.6, 1.25], [0.75, None]]

    def test_it_turns_the_results_form_into_a_comma_list(self, experiment):
        split, fed = experiment.runs.order_by("position")
        response = logged_in(experiment.owner).get(f"/compare/?runs={split.id}&runs={fed.id}")
        assert response.status_code == 302
        assert response["Location"] == f"/compare/?runs={split.id},{fed.id}"

    @pytest.mark.parametrize("runs", ["not-a-uuid", ",".join(str(uuid.uuid4()) for _ in range(21))],
                             ids=["not-a-uuid", "21-runs"])  # the same ids on every xdist worker
    def test_it_refuses_a_bad_run_list(self, owner, runs):
        response = logged_in(owner).get(f"/compare/?runs={runs}")
        assert response.status_code == 400
        assert b"alert error" in response.content

    def test_it_answers_404_for_unknown_runs(self, owner):
        assert logged_in(owner).get(f"/compare/?runs={uuid.uuid4()}").status_code == 404

    def test_it_exports_every_run_with_final_values(self, experiment):
        client = logged_in(experiment.owner)
        response = client.get("/results/export.csv")
        assert response["Content-Disposition"] == 'attachment; filename="estuary-results.csv"'
        rows = list(csv.DictReader(io.StringIO(response.content.decode())))
        assert [(row["method"], row["accuracy"], row["loss"], row["traffic_bytes/features"])
                for row in rows] == [("splitfed", "0.75", "", "10.0"),
                                     ("fedavg", "0.6", "1.25", "")]
        exported = json.loads(client.get("/results/export.json").content)
        assert exported["runs"][0]["final"] == {"accuracy": 0.75, "traffic_bytes/features": 10.0}

    def test_it_refuses_an_unknown_export_format(self, owner):
        assert logged_in(owner).get("/results/export.xml").status_code == 400

    def test_it_serves_plotly_from_the_python_package(self, owner):
        response = Client().get(static("vendor/plotly.min.js"))
        body = b"".join(response.streaming_content)
        assert response["Content-Type"].startswith("text/javascript")
        assert b"window.Plotly = Plotly" in body
        assert body == PLOTLY_BUNDLE.read_bytes()

    def test_it_lets_the_browser_keep_plotly_cached(self, owner):
        client = Client()
        first = client.get(static("vendor/plotly.min.js"))
        again = client.get(static("vendor/plotly.min.js"),
                           HTTP_IF_MODIFIED_SINCE=first["Last-Modified"])
        assert again.status_code == 304


@pytest.mark.django_db
@pytest.mark.parametrize("name", [method.name for method in registry.all_methods()])
def test_the_new_experiment_page_opens_on_every_method(owner, name):
    """The page preselects any catalogue method; its form is built in the browser from the
    catalogue URL it is given (test_browser builds and submits it for every method)."""
    response = logged_in(owner).get("/experiments/new/", {"algorithm": name})
    assert response.status_code == 200
    data = response.context["page_data"]
    assert data["initial_algorithm"] == name
    assert data["algorithms_url"] == "/api/v1/algorithms/"
    page = response.content.decode()
    assert 'id="config-fields"' in page and 'id="new-experiment-data"' in page


@pytest.mark.django_db
class TestReadableViews:
    def test_it_shows_the_config_as_a_table_and_compares_configs(self, experiment):
        split, fed = experiment.runs.order_by("position")
        client = logged_in(experiment.owner)
        page = client.get(f"/experiments/{experiment.id}/")
        rows = dict(page.context["config_rows"])
        assert rows["rounds"] == "3" and rows["testbed"] == experiment.config["testbed"]
        assert page.context["page_data"]["metric_catalogue"]["accuracy"]["unit"] == "fraction"

        diff = client.get(f"/compare/?runs={split.id},{fed.id}").context["config_diff"]
        assert diff.labels == ["split vs fed · splitfed", "split vs fed · fedavg"]
        differing = dict(diff.differing)
        assert differing and "rounds" not in differing
        only_split = set(split.config) - set(fed.config)
        assert {key for key, cells in differing.items() if cells[1] == "—"} == only_split
        assert ("rounds", "3") in diff.same

    def test_it_pages_and_filters_the_lists_and_names_a_bad_filter(self, experiment):
        client = logged_in(experiment.owner)
        page = client.get("/experiments/?search=split&ordering=name")
        assert [row["experiment"].name for row in page.context["rows"]] == ["split vs fed"]
        assert page.context["rows"][0]["main_label"] == "Accuracy"
        assert page.context["rows"][0]["main_value"] == 0.75
        assert client.get("/experiments/?search=nothing").context["rows"] == []
        bad = client.get("/experiments/?created_after=tomorrow")
        assert bad.status_code == 400 and "created_after" in bad.context["errors"]
        assert client.get("/results/?method=fedavg").context["rows"]
        assert not client.get("/results/?status=failed").context["rows"]


def test_the_value_filters_read_like_a_person_writes():
    from frontend.templatetags.estuary_format import duration, metric_in_unit

    assert [duration(s) for s in (4.4, 125, 7322)] == ["4 s", "2 min 05 s", "2 h 02 min"]
    assert metric_in_unit(0.81234, "fraction") == "81.23%"
    assert metric_in_unit(60e6, "bytes") == "60 MB"
    assert metric_in_unit(None, "s") == "—"
