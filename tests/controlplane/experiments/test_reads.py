"""Owners' reads of experiments and runs (issue #20): served on the database lane ``reads``
(connections persist across GETs), answered 304 when the body a poll would get is the one it
already has, and kept rendered between writes (controlplane.experiments.reads) — never served
once anything in them changed, by a write (in any process) or by time alone."""

import re
from datetime import timedelta
from hashlib import md5

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.http import quote_etag
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from controlplane.asgi_http import _lane_of
from controlplane.devices import actions as device_actions
from controlplane.devices.models import Device
from controlplane.experiments import actions
from controlplane.experiments.models import Experiment, Job, ReadChange, ReadChangeFold, Run
from controlplane.experiments.reads import FOLD_AT, RenderedRow, fold_changes, read_version
from controlplane.experiments.views import ExperimentViewSet, RunViewSet
from tests.controlplane.experiments.test_lean_serializers import world

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


# --- pages kept rendered between writes ------------------------------------------------------

DURATION = re.compile(rb'"duration_s":[0-9.e+-]+')


def timeless(body: bytes) -> bytes:
    """``body`` with every running duration (measured to each answer's own now) zeroed."""
    return DURATION.sub(b'"duration_s":0', body)


def served(client, url: str) -> tuple[bytes, int]:
    """The body of a GET (checked to carry the ETag of exactly that body) and the queries it
    cost."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    assert response["ETag"] == quote_etag(md5(response.content).hexdigest())
    return response.content, len(captured)


def drf_rendering(user, view_class, url: str) -> bytes:
    """The page as DRF's own pagination and JSON renderer write it, from the view's queryset
    and serializer (no cache involved)."""
    request = Request(APIRequestFactory().get(url))
    request.user = user
    view = view_class(request=request, format_kwarg=None, action="list", kwargs={})
    items = view.paginator.paginate_queryset(view.filtered_queryset(view.list_query(request)),
                                             request, view=view)
    data = view.get_serializer(items, many=True).data
    return JSONRenderer().render(view.paginator.get_paginated_response(data).data)


@pytest.fixture
def empty_caches():
    for view in (ExperimentViewSet, RunViewSet):
        view.page_cache.clear()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("view_class, url", [
    (ExperimentViewSet, "/api/v1/experiments/?page_size=500"),
    (ExperimentViewSet, "/api/v1/experiments/?page_size=4&page=2"),
    (ExperimentViewSet, "/api/v1/experiments/?status=running&ordering=name&page_size=3"),
    (RunViewSet, "/api/v1/runs/?page_size=5&page=3"),
    (RunViewSet, "/api/v1/runs/?state=queued"),
])
def test_a_page_served_again_is_the_page_drf_renders(api, owner, device_factory,
                                                    experiment_factory, empty_caches,
                                                    view_class, url):
    """Rows of every kind (running, queued behind a holder, degraded and offline devices,
    distributed, failed, a rerun, a deleted device, non-ASCII and U+2028), first page and
    later ones (the links), filtered and ordered."""
    world(api, owner, device_factory, experiment_factory)
    client = api(owner)
    first, built = served(client, url)
    again, cached = served(client, url)
    assert cached < built  # the second answer was the kept page
    assert timeless(again) == timeless(first) == timeless(drf_rendering(owner, view_class, url))


@pytest.mark.django_db(transaction=True)
def test_a_kept_page_is_served_only_while_nothing_in_it_changed(
        api, owner, device_factory, experiment_factory, empty_caches):
    client = api(owner)
    host = device_factory(owner).device
    first = experiment_factory(owner, host, preset="local-3", name="first")
    experiment_factory(owner, host, preset="local-3", name="second")
    url = "/api/v1/experiments/"
    body, built = served(client, url)
    again, cached = served(client, url)
    assert cached < built and timeless(again) == timeless(body)

    # Time alone: the running experiments' durations grow with each answer.
    rows = client.get(url).json()["results"]
    later = client.get(url).json()["results"]
    assert all(b["duration_s"] >= a["duration_s"] for a, b in zip(rows, later))
    assert any(b["duration_s"] > a["duration_s"] for a, b in zip(rows, later))

    # A write: the first experiment's job starts, so the second's queue names it.
    actions.start_job(Job.objects.get(run__experiment=first))
    reason = client.get(url).json()["results"][0]["runs"][0]["queue_reason"]
    assert "is running fedavg of “first”" in reason

    # No counted write: the device's last heartbeat is too old (as time alone would make it:
    # offline; never seen, so no server's uptime marks can make it count as recent) ...
    Device.objects.filter(pk=host.pk).update(last_seen=None)
    reason = client.get(url).json()["results"][0]["runs"][0]["queue_reason"]
    assert reason.startswith("The agent is offline (last heartbeat: never)")
    # ... and a heartbeat (it writes only last_seen: no change counted) brings it back.
    Device.objects.filter(pk=host.pk).update(last_seen=timezone.now())
    reason = client.get(url).json()["results"][0]["runs"][0]["queue_reason"]
    assert not reason.startswith("The agent is offline") and "is running" in reason

    # A write made outside the ORM's models (raw SQL) counts as well.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE experiments_experiment SET name = %s WHERE id = %s",
                       ["renamed", first.id.hex if connection.vendor == "sqlite" else first.id])
    assert [row["name"] for row in client.get(url).json()["results"]] == ["second", "renamed"]


@pytest.mark.parametrize("seconds", [0, 0.0004, 1.5, 59.999, 3600.25, 123456.789, 1e9 + 0.5])
def test_a_running_rows_duration_is_written_as_the_renderer_writes_it(seconds):
    created = timezone.now()
    row = {"id": "x", "name": "résumé \u2028", "duration_s": 0.0, "runs": [{"duration_s": 1}]}
    kept = RenderedRow.of(row, created)
    now = created + timedelta(seconds=seconds)
    expected = {**row, "duration_s": round(max(0.0, (now - created).total_seconds()), 3)}
    assert kept.at(now) == JSONRenderer().render(expected)


def _change(model, pk, **values) -> bool:
    """Whether updating only ``values`` of one row changes the lists' version."""
    before = read_version()
    model.objects.filter(pk=pk).update(**values)
    return read_version() != before


@pytest.mark.django_db(transaction=True)
def test_every_write_a_list_shows_changes_the_version_and_heartbeats_do_not(
        owner, device_factory, experiment_factory):
    host = device_factory(owner).device
    experiment = experiment_factory(owner, host, preset="local-3")
    run = experiment.runs.get()
    job = run.jobs.get()
    now = timezone.now()
    # Every column of a job but listed_at (a column added to Job without its migration
    # recreating the trigger fails here).
    new_values = {"rank": 3, "device": None, "celery_task_id": "x", "state": "running",
                  "queued_at": now, "dispatched_at": now, "started_at": now,
                  "finished_at": now, "error": "e"}
    columns = {field.name for field in Job._meta.concrete_fields} - {"id", "listed_at"}
    assert columns == set(new_values) | {"run"}
    for name, value in new_values.items():
        assert _change(Job, job.pk, **{name: value}), name
    other_run = experiment_factory(owner, host, preset="local-3").runs.get()
    assert _change(Job, job.pk, run=other_run)
    assert not _change(Job, job.pk, listed_at=now)
    # Runs and experiments: any column.
    assert _change(Run, run.pk, error="x") and _change(Run, run.pk, result={"a": 1})
    assert _change(Experiment, experiment.pk, name="y") and _change(
        Experiment, experiment.pk, finished_at=now)
    # Devices: what a list shows of them; a heartbeat's last_seen and resources are not.
    assert _change(Device, host.pk, name="renamed")
    assert _change(Device, host.pk, worker_consuming=False)
    assert _change(Device, host.pk, worker_detail="broker down")
    assert not _change(Device, host.pk, last_seen=now, resources={"cpu": 1})
    before = read_version()
    device_actions.record_heartbeat(Device.objects.get(pk=host.pk), [job.pk])
    assert read_version() != before  # it said it consumes again: a change
    before = read_version()
    device_actions.record_heartbeat(Device.objects.get(pk=host.pk), [job.pk])
    assert read_version() == before  # the same heartbeat again: none
    # Inserts and deletes.
    before = read_version()
    experiment_factory(owner, host, preset="local-3")
    assert read_version() != before
    before = read_version()
    Experiment.objects.filter(pk=experiment.pk).delete()
    assert read_version() != before


@pytest.mark.django_db(transaction=True)
def test_folding_the_change_log_keeps_the_version_and_a_new_log_never_repeats_one(
        owner, device_factory, experiment_factory):
    host = device_factory(owner).device
    experiment = experiment_factory(owner, host, preset="local-3")
    for index in range(FOLD_AT // 10):
        Experiment.objects.filter(pk=experiment.pk).update(name=f"n{index}")
    epoch, version = read_version()
    assert ReadChange.objects.count() > 0
    assert fold_changes() > 0 and ReadChange.objects.count() == 0
    assert read_version() == (epoch, version)
    Experiment.objects.filter(pk=experiment.pk).update(name="again")
    assert read_version() == (epoch, version + 1)
    # Reading folds by itself once the log is long.
    ReadChange.objects.bulk_create([ReadChange() for _ in range(FOLD_AT)])
    assert read_version() == (epoch, version + 1 + FOLD_AT)
    assert ReadChange.objects.count() == 0
    # Emptied tables (a flush): counting restarts under a new epoch.
    ReadChangeFold.objects.all().delete()
    assert read_version()[0] != epoch


def test_no_page_is_kept_inside_a_transaction(owner):
    """A version read there could count the transaction's own writes, undone by a
    rollback."""
    assert connection.in_atomic_block and read_version() is None


@pytest.mark.django_db(transaction=True)
def test_a_write_in_another_process_reaches_a_servers_kept_page(
        asgi_server, owner, device_factory, experiment_factory):
    """The server keeps the page; this test process writes (as Celery, the reaper or another
    server would); the server's next answer has the write."""
    host = device_factory(owner).device
    experiment = experiment_factory(owner, host, preset="local-3", name="before")
    http = requests.Session()
    http.headers["Authorization"] = f"Token {owner.api_token}"
    url = f"{asgi_server}/api/v1/experiments/"
    for _ in range(3):
        assert http.get(url, timeout=30).json()["results"][0]["name"] == "before"
    Experiment.objects.filter(pk=experiment.pk).update(name="after")
    assert http.get(url, timeout=30).json()["results"][0]["name"] == "after"
    job = Job.objects.get(run__experiment=experiment)
    actions.start_job(job)
    actions.finish_job(Job.objects.get(pk=job.pk), "succeeded", "", {"accuracy": 0.9})
    first = http.get(url, timeout=30).json()["results"][0]
    assert first["status"] == "succeeded" and first["runs"][0]["result"] == {"accuracy": 0.9}
    assert http.get(url, timeout=30).json()["results"][0] == first  # finished: nothing moves
