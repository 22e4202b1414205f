"""A page of experiments or runs costs a fixed number of queries, whatever its number of
experiments, runs, jobs and devices (issue #20: queue reasons were read per run)."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.experiments import actions
from controlplane.experiments.models import Job
from controlplane.experiments.queueing import queue_reason

pytestmark = pytest.mark.django_db


def queries(client, url: str) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured), response.json()


def fill(owner, device_factory, experiment_factory, devices: int) -> None:
    """Per device: one running experiment and two queued ones (one with a baseline), so pages
    carry running holders, queue positions and several runs per experiment."""
    for _ in range(devices):
        host = device_factory(owner).device
        first = experiment_factory(owner, host, preset="local-3")
        actions.start_job(Job.objects.get(run__experiment=first))
        experiment_factory(owner, host, preset="local-3")
        experiment_factory(owner, host, preset="local-3", algorithm="splitfed",
                           baselines=["fedavg"])
    degraded = device_factory(owner).device
    degraded.worker_consuming, degraded.worker_detail = False, "broker down"
    degraded.save(update_fields=["worker_consuming", "worker_detail"])
    experiment_factory(owner, degraded, preset="local-3")
    offline = device_factory(owner).device
    experiment_factory(owner, offline, preset="local-3")
    offline.last_seen = None  # it went silent after its job was queued
    offline.save(update_fields=["last_seen"])


@pytest.mark.parametrize("url", ["/api/v1/experiments/", "/api/v1/runs/"])
def test_a_page_costs_the_same_queries_for_more_rows(api, owner, device_factory,
                                                     experiment_factory, url):
    client = api(owner)
    fill(owner, device_factory, experiment_factory, devices=1)
    few, small = queries(client, url)
    fill(owner, device_factory, experiment_factory, devices=4)
    many, large = queries(client, url)
    assert large["count"] > 2 * small["count"]
    assert many == few


def test_a_page_says_what_each_run_alone_would(api, owner, device_factory,
                                               experiment_factory):
    """The shared reading of the queues gives every run the sentence it gets on its own."""
    fill(owner, device_factory, experiment_factory, devices=2)
    page = api(owner).get("/api/v1/experiments/").json()["results"]
    runs = [run for experiment in page for run in experiment["runs"]]
    reasons = [run["queue_reason"] for run in runs]
    assert any("is running fedavg" in reason for reason in reasons)
    assert any(reason.startswith("The agent is not taking jobs: broker down.")
               for reason in reasons)
    assert any(reason.startswith("The agent is offline") for reason in reasons)
    from controlplane.experiments.models import Run
    for run in runs:
        assert run["queue_reason"] == queue_reason(Run.objects.get(pk=run["id"]))
        for job in run["jobs"]:
            device = Job.objects.get(pk=job["id"]).device
            expected = device.status_detail() if job["state"] == "queued" else ""
            assert job["waiting_reason"] == expected


def test_the_detail_of_an_experiment_costs_the_same_queries_for_more_runs(
        api, owner, device_factory, experiment_factory):
    client = api(owner)
    host = device_factory(owner).device
    alone = experiment_factory(owner, host, preset="local-3")
    few, _ = queries(client, f"/api/v1/experiments/{alone.id}/")
    other = device_factory(owner).device
    experiment_factory(owner, other, preset="local-3")
    several = experiment_factory(owner, host, preset="local-3", algorithm="splitfed",
                                 baselines=["fedavg"])
    many, body = queries(client, f"/api/v1/experiments/{several.id}/")
    assert len(body["runs"]) == 2
    assert many == few
