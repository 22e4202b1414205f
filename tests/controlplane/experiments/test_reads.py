"""Owners' reads of experiments and runs (issue #20): served on the database lane ``reads``
(connections persist across GETs), and answered 304 when the body a poll would get is the one
it already has, never when anything in it changed, by a write or by time alone."""

import pytest
import requests
from django.conf import settings
from django.db import connection

from controlplane.asgi_http import _lane_of
from controlplane.experiments import actions
from controlplane.experiments.models import Experiment, Job

pytestmark = pytest.mark.django_db
SOME_ID = "0431f91a-ad20-4535-bc3f-0fee3ec112e4"  # fixed: test ids must match on every xdist worker


@pytest.mark.parametrize("method, path, lane", [
    ("GET", "/api/v1/experiments/", "reads"),
    ("GET", f"/api/v1/experiments/{SOME_ID}/", "reads"),
    ("GET", "/api/v1/runs/", "reads"),
    ("GET", f"/api/v1/runs/{SOME_ID}/", "reads"),
    ("POST", "/api/v1/experiments/", None),
    ("POST", f"/api/v1/experiments/{SOME_ID}/cancel/", None),
    ("POST", f"/api/v1/runs/{SOME_ID}/metrics/", "reports"),
    ("GET", "/api/v1/devices/", None),
])
def test_reads_go_to_their_own_lane_and_writes_to_none(method, path, lane):
    assert _lane_of({"type": "http", "method": method, "path": path}) == lane


@pytest.mark.django_db(transaction=True)
def test_reads_through_daphne_answer_as_in_process_and_keep_their_connection(
        asgi_server, api, owner, device_factory, experiment_factory):
    experiment = experiment_factory(owner, device_factory(owner).device, preset="local-3")
    http = requests.Session()
    http.headers["Authorization"] = f"Token {owner.api_token}"
    served = http.get(f"{asgi_server}/api/v1/experiments/", timeout=30)
    assert served.status_code == 200
    here = api(owner).get("/api/v1/experiments/").json()
    assert [e["id"] for e in served.json()["results"]] == [str(experiment.id)]
    assert ({**served.json()["results"][0], "duration_s": 0}
            == {**here["results"][0], "duration_s": 0})
    run_id = here["results"][0]["runs"][0]["id"]
    assert http.get(f"{asgi_server}/api/v1/runs/{run_id}/", timeout=30).json()["id"] == run_id
    if connection.vendor != "postgresql":
        return  # a backend to count needs PostgreSQL (the lane itself: test_lane.py)
    from tests.controlplane.metrics.test_lane import lane_backends

    for _ in range(12):
        assert http.get(f"{asgi_server}/api/v1/experiments/", timeout=30).status_code == 200
    # No new backend per GET: at most one per lane thread (a GET may reach a second thread
    # while the first is still returning to the pool).
    assert 1 <= len(lane_backends()) <= settings.ESTUARY["READ_THREADS"] < 12


def get(client, url: str, etag: str | None = None):
    return client.get(url, **({"HTTP_IF_NONE_MATCH": etag} if etag else {}))


def test_an_unchanged_run_is_a_304_and_any_change_a_fresh_200(api, owner, device_factory,
                                                                experiment_factory, settings,
                                                                no_server_marks):
    client = api(owner)
    host = device_factory(owner).device
    experiment_factory(owner, host, preset="local-3")
    queued = experiment_factory(owner, host, preset="local-3")
    url = f"/api/v1/runs/{queued.runs.get().id}/"
    first = get(client, url)
    assert first.status_code == 200 and first["Cache-Control"] == "private, no-cache"
    etag = first["ETag"]
    again = get(client, url, etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag

    # A write: the job ahead starts, so this run's queue reason names it.
    actions.start_job(Job.objects.exclude(run__experiment=queued).get())
    changed = get(client, url, etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert "is running fedavg" in changed.json()["queue_reason"]
    etag = changed["ETag"]
    assert get(client, url, etag).status_code == 304

    # Time alone: no write, but the device's heartbeats are now overdue (offline).
    settings.ESTUARY = {**settings.ESTUARY, "HEARTBEAT_INTERVAL_S": 0}
    late = get(client, url, etag)
    assert late.status_code == 200 and late["ETag"] != etag
    assert late.json()["queue_reason"].startswith("The agent is offline")


def test_the_list_is_a_304_only_once_nothing_in_it_moves(api, owner, device_factory,
                                                         experiment_factory):
    client = api(owner)
    experiment = experiment_factory(owner, device_factory(owner).device, preset="local-3")
    url = "/api/v1/experiments/"
    etag = get(client, url)["ETag"]
    # Running: its duration grows between two polls, so the body (and its ETag) differ.
    assert get(client, url, etag).status_code == 200
    job = Job.objects.get(run__experiment=experiment)
    actions.start_job(job)
    actions.finish_job(Job.objects.get(pk=job.pk), "succeeded", "", {})
    assert Experiment.objects.get().finished_at is not None
    finished = get(client, url)
    assert finished.status_code == 200
    assert get(client, url, finished["ETag"]).status_code == 304
    assert get(client, f"{url}?status=running", finished["ETag"]).status_code == 200  # empty


def test_a_refused_read_carries_no_etag(api, owner, outsider, device_factory,
                                        experiment_factory):
    experiment = experiment_factory(owner, device_factory(owner).device, preset="local-3")
    refused = api(outsider).get(f"/api/v1/experiments/{experiment.id}/")
    assert refused.status_code == 404 and "ETag" not in refused
