"""Faults of processes, injected for real: an agent killed mid-job, the web server stopped and
started again mid-run, the control plane's worker killed, the answer to a job's ``start/``
lost. What must hold (docs/controlplane.md, "Jobs and the reaper"): healthy jobs finish, a dead
agent's job fails with a clear error within 60 s, every reported point is stored once, and no
job stays ``running`` without an agent that runs it.

The tests' heartbeat interval is 1 s, so an 8 s outage spans 8 missed heartbeats (3 fail a
device whose silence counts).
"""
from __future__ import annotations

import os
import re
import signal
import time

import psutil
import pytest

from tests.agents.test_jobs import LONG, SMALL, job_state, launch
from tests.fixtures.agents import wait_for
from tests.fixtures.servers import http_session

pytestmark = pytest.mark.django_db(transaction=True)

#: Long enough to span the outage, short enough to finish soon after it (~0.2 s a round).
MEDIUM = {**SMALL, "rounds": 60}
OUTAGE_S = 8


def series(run_id: str) -> dict[str, list[int]]:
    """Each stored metric's steps, in order (a duplicate would show up twice)."""
    from controlplane.metrics.models import MetricPoint

    steps: dict[str, list[int]] = {}
    for name, step in (MetricPoint.objects.filter(run_id=run_id)
                       .order_by("name", "step").values_list("name", "step")):
        steps.setdefault(name, []).append(step)
    return steps


def rounds_stored(run_id: str) -> int:
    return len(series(run_id).get("accuracy", []))


def test_a_server_outage_fails_no_healthy_job_and_a_dead_agent_still_fails_its_job(
        agent_factory, owner, user_http, asgi_process, controlplane_worker):
    from controlplane.experiments.models import Job

    http = user_http(owner)
    doomed_agent, healthy_agent = agent_factory("fault-doomed"), agent_factory("fault-healthy")
    doomed = launch(http, asgi_process.url, doomed_agent, LONG, "doomed")["runs"][0]["id"]
    healthy = launch(http, asgi_process.url, healthy_agent, MEDIUM, "healthy")["runs"][0]["id"]
    wait_for(lambda: rounds_stored(doomed) >= 2 and rounds_stored(healthy) >= 2, 120,
             "two rounds of both runs")

    # The web server goes away for a while and comes back on the same port.
    stopped_at = time.monotonic()
    asgi_process.stop()
    time.sleep(OUTAGE_S)
    asgi_process.restart()
    outage_s = time.monotonic() - stopped_at
    # Both agents are alive: give them the grace window to report, then nothing was failed.
    time.sleep(4)
    assert {job_state(doomed), job_state(healthy)} <= {"running", "succeeded"}, (
        list(Job.objects.values_list("error", flat=True)), controlplane_worker.output())

    # Now one agent really dies: its job fails within the detection window, clearly.
    doomed_agent.send(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: job_state(doomed) == "failed", 60, "the dead agent's job to fail")
    detected_s = time.monotonic() - killed_at
    assert "fault-doomed missed 3 heartbeats" in Job.objects.get(run_id=doomed).error

    wait_for(lambda: job_state(healthy) != "running", 180, "the healthy job to finish")
    assert job_state(healthy) == "succeeded", Job.objects.get(run_id=healthy).error
    rounds = list(range(1, MEDIUM["rounds"] + 1))
    assert series(healthy)["accuracy"] == rounds  # every point once, none lost
    assert all(steps == sorted(set(steps)) for steps in series(healthy).values())
    stored_doomed = series(doomed)["accuracy"]
    assert stored_doomed == list(range(1, len(stored_doomed) + 1))
    assert not Job.objects.filter(state="running").exists()
    print(f"outage {outage_s:.1f} s: nothing failed; dead agent's job failed {detected_s:.1f} s "
          "after kill -9")


def _count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text))


def test_a_killed_worker_comes_back_with_one_reaper_per_interval(controlplane_worker):
    from django.conf import settings

    interval = settings.ESTUARY["HEARTBEAT_INTERVAL_S"]
    descendants = psutil.Process(controlplane_worker.worker.popen.pid).children(recursive=True)
    os.kill(controlplane_worker.worker.popen.pid, signal.SIGKILL)
    controlplane_worker.worker.popen.wait(timeout=30)
    # Nothing of the worker outlives it (an embedded beat, `worker -B`, would, and keep firing).
    gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == [], [process.cmdline() for process in alive]
    worker = controlplane_worker.restart_worker()
    time.sleep(2 * interval)  # past what was queued while it was down

    worker_from = len(worker.log.read_text(errors="replace"))
    beat_from = len(controlplane_worker.beat.log.read_text(errors="replace"))
    time.sleep(6 * interval)
    received = _count(r"Task experiments\.reap_stale_jobs\[[^\]]+\] received",
                      worker.log.read_text(errors="replace")[worker_from:])
    sent = _count(r"Sending due task reap-stale-jobs",
                  controlplane_worker.beat.log.read_text(errors="replace")[beat_from:])
    # One beat (its own process, untouched by the kill) and nothing else schedules the reaper.
    assert sent >= 3, controlplane_worker.output()
    assert received <= sent + 1, controlplane_worker.output()
    print(f"after the restart: {received} reaper runs for {sent} beats in {6 * interval} s")


def test_a_lost_start_answer_is_retried_and_an_unlisted_running_job_fails(
        owner, device_factory, experiment_factory, asgi_server, controlplane_worker):
    from controlplane.experiments.models import Job

    agent = device_factory(owner, name="fault-lost-start")
    job = Job.objects.get(run__experiment=experiment_factory(owner, host=agent.device))
    device = http_session(credential=agent.credential)
    start = f"{asgi_server}/api/v1/agents/jobs/{job.id}/start/"

    first = device.post(start, timeout=30)   # committed, but say its answer was lost
    retry = device.post(start, timeout=30)   # the agent's retry
    assert (first.status_code, retry.status_code) == (200, 200), retry.text
    assert retry.json() == first.json()

    # The agent gave up on the job: it heartbeats without listing it.
    began = time.monotonic()

    def heartbeat_until_failed() -> bool:
        answer = device.post(f"{asgi_server}/api/v1/agents/heartbeat/",
                             json={"running_jobs": []}, timeout=30)
        assert answer.status_code == 200, answer.text
        return job_state(str(job.run_id)) == "failed"

    wait_for(heartbeat_until_failed, 60, "the unlisted job to fail", interval_s=0.5)
    error = Job.objects.get(pk=job.pk).error
    assert "fault-lost-start is alive but its agent has not listed this job" in error
    print(f"unlisted running job failed after {time.monotonic() - began:.1f} s")
