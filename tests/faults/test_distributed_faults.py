"""Faults of distributed runs on real agents: cancel mid-run, a worker's agent killed (-9)
mid-run, an agent offline when its gang is allocated. After each, the surviving agents take
the next job.

One test function on purpose: the agents (each loads torch) are started once for all four
scenarios, which run one after the other on the same devices.
"""
import signal
import time

import psutil
import pytest

from tests.agents.distributed_helpers import (
    job_ids,
    launch,
    role_pids,
    run_row,
    series,
    start_agents,
)
from tests.fixtures.agents import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: Long enough to still be running when the test acts on it.
LONG = {"rounds": 1000, "dataset": "digits", "workers": 2}
SHORT = {"rounds": 2, "dataset": "digits", "workers": 2}
FINISHED = ("succeeded", "failed", "cancelled")


def first_rounds(run_id: str, rounds: int = 2) -> bool:
    return len(series(run_id, "accuracy")) >= rounds


def assert_points_have_no_gap(run_id: str) -> None:
    """Every metric's stored steps run 1..n (or 0..n) without a hole; the store is unique on
    (run, name, step), so none is duplicated."""
    from controlplane.metrics.models import MetricPoint

    names = set(MetricPoint.objects.filter(run_id=run_id).values_list("name", flat=True))
    assert "accuracy" in names
    for name in names:
        steps = [step for step, _ in series(run_id, name)]
        assert steps == list(range(steps[0], steps[0] + len(steps))), (name, steps)
        assert steps[0] in (0, 1), (name, steps[:3])


def test_cancel_kill_and_offline_agents_fail_only_their_runs(
        agent_factory, owner, user_http, asgi_server, controlplane_worker, settings):
    http = user_http(owner)
    cloud, edge1, edge2 = start_agents(agent_factory, [
        ("cloud", "a6000-server"), ("edge-1", "jetson-nx"), ("edge-2", "jetson-nx")])
    agents = [cloud, edge1, edge2]

    # 1. Cancel mid-run: every rank's role process is gone within 10 s.
    run_id = launch(http, asgi_server, agents, LONG)["runs"][0]["id"]
    wait_for(lambda: first_rounds(run_id), 120, "the first rounds")
    experiment = run_row(run_id).experiment_id
    cancelled_at = time.monotonic()
    answer = http.post(f"{asgi_server}/api/v1/experiments/{experiment}/cancel/", timeout=30)
    assert answer.status_code == 200, answer.text
    jobs = job_ids(run_id)
    ended = wait_for(lambda: all(role_pids(agent, jobs[rank]) for rank, agent in
                                 enumerate(agents)) and
                     [role_pids(agent, jobs[rank]) for rank, agent in enumerate(agents)],
                     10, "every rank's role process to end")
    stopped_after = time.monotonic() - cancelled_at
    assert stopped_after < 10
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pids in ended for pid in pids)
    assert run_row(run_id).state == "cancelled"
    assert_points_have_no_gap(run_id)

    # 2. kill -9 of a worker's agent mid-run: the run fails within 60 s naming its device.
    run_id = launch(http, asgi_server, agents, LONG)["runs"][0]["id"]
    wait_for(lambda: first_rounds(run_id), 120, "the first rounds")
    edge2.send(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: run_row(run_id).state in FINISHED, 60, "the run to fail")
    failed_after = time.monotonic() - killed_at
    run = run_row(run_id)
    assert run.state == "failed" and "edge-2" in run.error, run.error
    assert_points_have_no_gap(run_id)

    # 3. The agent is offline when the next gang is allocated: the run fails after the claim
    #    deadline, naming it.
    created_at = time.monotonic()
    run_id = launch(http, asgi_server, agents, SHORT)["runs"][0]["id"]
    wait_for(lambda: run_row(run_id).state in FINISHED, 60, "the run to fail")
    run = run_row(run_id)
    assert run.state == "failed" and "edge-2" in run.error and "claim" in run.error, run.error
    assert time.monotonic() - created_at >= settings.ESTUARY["GANG_CLAIM_DEADLINE_S"]

    # 4. The coordinator's agent and the other worker's are free: they run the next job.
    run_id = launch(http, asgi_server, [cloud, edge1], SHORT)["runs"][0]["id"]
    wait_for(lambda: run_row(run_id).state in FINISHED, 120, "the next run")
    run = run_row(run_id)
    assert run.state == "succeeded", run.error
    assert len(series(run_id, "accuracy")) == SHORT["rounds"]
    print(f"cancel stopped every rank in {stopped_after:.1f} s; the killed worker failed the "
          f"run in {failed_after:.1f} s")
