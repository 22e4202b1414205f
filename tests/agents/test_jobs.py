"""Experiments created through the REST API run on real agent processes with real training."""
import signal
import time

import pytest

from tests.fixtures.agents import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: A small real FedAvg: two workers on sklearn's digits, a few rounds.
SMALL = {"rounds": 3, "dataset": "digits", "workers": 2}
#: The same, with enough rounds to still be running when the test acts on it.
LONG = {**SMALL, "rounds": 1000}


def launch(http, server: str, agent, config: dict, name: str = "fedavg on an agent") -> dict:
    response = http.post(f"{server}/api/v1/experiments/", json={
        "name": name, "algorithm": "fedavg", "config": config, "preset": "local-3",
        "host": agent.device_id}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def job_state(run_id: str) -> str:
    from controlplane.experiments.models import Job

    return Job.objects.get(run_id=run_id).state


def job_id(run_id: str) -> str:
    from controlplane.experiments.models import Job

    return str(Job.objects.get(run_id=run_id).id)


def stored_points(run_id: str) -> dict[tuple[str, int], float]:
    from controlplane.metrics.models import MetricPoint

    return {(p.name, p.step): p.value for p in MetricPoint.objects.filter(run_id=run_id)}


def test_it_runs_an_experiment_and_stores_its_metrics_and_logs(
        agent_factory, owner, user_http, asgi_server):
    from controlplane.experiments.models import Run
    from controlplane.metrics.models import RunLog

    agent = agent_factory("cloud-1")
    experiment = launch(user_http(owner), asgi_server, agent, SMALL)
    run_id = experiment["runs"][0]["id"]

    wait_for(lambda: job_state(run_id) in ("succeeded", "failed"), 120, "the job to finish")

    run = Run.objects.get(pk=run_id)
    assert run.state == "succeeded", run.error
    points = stored_points(run_id)
    accuracy = [points[("accuracy", step)] for step in range(1, SMALL["rounds"] + 1)]
    assert all(0.0 <= value <= 1.0 for value in accuracy)
    assert accuracy[-1] == pytest.approx(run.result["final"]["accuracy"])
    assert accuracy[-1] > 0.3  # real training on digits beats chance (0.1) within 3 rounds
    assert {"loss", "traffic_bytes", "sim_time_s"} <= {name for name, _ in points}
    lines = list(RunLog.objects.filter(run_id=run_id).values_list("line", flat=True))
    assert any(line.startswith("fedavg starting on this agent") for line in lines)
    assert "fedavg finished" in lines
    # The API serves the same series the agent reported.
    answer = user_http(owner).get(f"{asgi_server}/api/v1/runs/{run_id}/metrics/?name=accuracy")
    assert [p["value"] for p in answer.json()["points"]] == accuracy


def test_it_cancels_a_running_job_within_seconds_and_takes_the_next(
        agent_factory, owner, user_http, asgi_server):
    from controlplane.metrics.models import RunLog

    http = user_http(owner)
    agent = agent_factory("cloud-2")
    long_experiment = launch(http, asgi_server, agent, LONG, "long")
    long_run = long_experiment["runs"][0]["id"]
    wait_for(lambda: len(stored_points(long_run)) > 0, 120, "the first points of the long run")

    answer = http.post(f"{asgi_server}/api/v1/experiments/{long_experiment['id']}/cancel/",
                       timeout=30)
    assert answer.status_code == 200, answer.text
    cancelled_at = time.monotonic()

    # The agent notices (heartbeat or metrics answer), stops at the end of the round and says so.
    wait_for(lambda: RunLog.objects.filter(run_id=long_run, line="cancelled").exists(), 30,
             "the agent to confirm the cancellation")
    stopped_after_s = time.monotonic() - cancelled_at
    assert job_state(long_run) == "cancelled"
    rounds_done = max(step for name, step in stored_points(long_run) if name == "accuracy")
    assert rounds_done < LONG["rounds"]
    # The server has the state first; the agent logs the line once its method has returned.
    wait_for(lambda: f"job {job_id(long_run)} cancelled" in agent.output(), 30,
             "the agent's log line for the cancelled job")

    # The agent is free: the next experiment runs to the end on it.
    next_run = launch(http, asgi_server, agent, SMALL, "next")["runs"][0]["id"]
    wait_for(lambda: job_state(next_run) in ("succeeded", "failed"), 120, "the next job to finish")
    assert job_state(next_run) == "succeeded"
    print(f"cancelled job stopped {stopped_after_s:.1f}s after the cancel request")


def test_it_keeps_reported_points_when_the_agent_is_killed(
        agent_factory, owner, user_http, asgi_server, controlplane_worker):
    from controlplane.experiments.models import Job

    agent = agent_factory("cloud-3")
    run_id = launch(user_http(owner), asgi_server, agent, LONG)["runs"][0]["id"]
    wait_for(lambda: sum(name == "accuracy" for name, _ in stored_points(run_id)) >= 2, 120,
             "two rounds of the long run")
    before_kill = stored_points(run_id)

    agent.send(signal.SIGKILL)
    assert agent.wait() == -signal.SIGKILL

    # The reaper (a real Celery worker with beat) fails the job once 3 heartbeats are missed.
    wait_for(lambda: job_state(run_id) == "failed", 30, "the reaper to fail the job")
    job = Job.objects.get(run_id=run_id)
    assert "missed 3 heartbeats" in job.error
    after = stored_points(run_id)
    assert {key: after.get(key) for key in before_kill} == before_kill
