"""Distributed runs on three real agents (a cloud coordinator, two edge workers), end to end.

- They reproduce their emulated twins: the same accuracy curve for the same seed and config,
  and the measured model traffic equals the emulated count, with framing reported on top.
- Faults: cancel mid-run stops every rank within 10 s; kill -9 of a worker's agent fails the
  run within 60 s naming its device, with no gap in the stored points; an agent offline when its
  gang is allocated fails the run after the claim deadline, naming it; the surviving agents
  then run the next job.

One test function on purpose: starting the agents (each preloads torch) is most of the cost,
so they are started once and the scenarios run one after the other on the same devices.
"""
import time

import psutil
import pytest

from tests.agents.distributed_helpers import (
    FINISHED,
    assert_points_have_no_gap,
    job_ids,
    kill_fails_the_run,
    launch,
    role_pids,
    run_row,
    series,
    start_agents,
)
from tests.fixtures.agents import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: Small real runs: sklearn's digits, three virtual workers on two edge agents.
CONFIG = {"rounds": 2, "dataset": "digits", "workers": 3}
#: Long enough to still be running when the test acts on it.
LONG = {"rounds": 1000, "dataset": "digits", "workers": 2}
SHORT = {"rounds": 1, "dataset": "digits", "workers": 2}


def emulated_twin(run) -> tuple[list[tuple[int, float]], float, dict]:
    """The run's config (its testbed is the placement's emulated equivalent) run emulated in
    this process: (accuracy series, final traffic_bytes, result)."""
    from ml import registry
    from ml.reporting import MemoryReporter

    method = registry.get(run.method)
    reporter = MemoryReporter()
    result = method.run(method.parse_config(run.config), reporter)
    accuracy = [(p.step, p.value) for p in reporter.series("accuracy")]
    return accuracy, reporter.last("traffic_bytes"), result


def first_rounds(run_id: str, rounds: int) -> bool:
    return len(series(run_id, "accuracy")) >= rounds


def test_distributed_runs_on_three_local_agents(
        agent_factory, owner, user_http, asgi_server, controlplane_worker, settings):
    from controlplane.metrics.models import MetricPoint

    http = user_http(owner)
    cloud, edge1, edge2 = start_agents(agent_factory, [
        ("cloud", "a6000-server"), ("edge-1", "jetson-nx"), ("edge-2", "jetson-orin-nano")])
    agents = [cloud, edge1, edge2]

    # 1. splitfed and its fedavg baseline match their emulated twins.
    experiment = launch(http, asgi_server, agents, CONFIG,
                        algorithm="splitfed", baselines=("fedavg",))
    run_ids = [run["id"] for run in experiment["runs"]]
    wait_for(lambda: all(run_row(r).state in ("succeeded", "failed", "cancelled")
                         for r in run_ids), 240, "both distributed runs to finish")

    for run_id in run_ids:
        run = run_row(run_id)
        assert run.state == "succeeded", f"{run.method}: {run.error}"
        assert run.result["execution"] == "distributed"
        assert [slot["name"] for slot in run.placement] == ["cloud", "edge-1", "edge-2"]
        accuracy = series(run_id, "accuracy")
        assert [step for step, _ in accuracy] == list(range(1, CONFIG["rounds"] + 1))

        twin_accuracy, twin_traffic, _ = emulated_twin(run)
        assert [s for s, _ in twin_accuracy] == [s for s, _ in accuracy]
        for (_, measured), (_, emulated) in zip(accuracy, twin_accuracy):
            assert measured == pytest.approx(emulated, abs=1e-6), run.method

        # Measured payload bytes equal the emulated count; framing is reported on top.
        measured_traffic = series(run_id, "traffic_bytes")[-1][1]
        framing = run.result["framing_bytes"]
        assert measured_traffic == pytest.approx(twin_traffic, rel=1e-9), run.method
        assert 0 <= framing < 0.01 * measured_traffic, (run.method, framing, measured_traffic)
        print(f"{run.method}: measured model traffic {measured_traffic:.0f} B = emulated "
              f"{twin_traffic:.0f} B; framing {framing} B "
              f"({100 * framing / measured_traffic:.3f} %)")
        # Every device's measured traffic and times are reported per round.
        names = set(MetricPoint.objects.filter(run_id=run_id).values_list("name", flat=True))
        for device in ("edge-1", "edge-2"):
            assert f"traffic_bytes/{device}" in names, sorted(names)

    # 2. Cancel mid-run: every rank's role process is gone within 10 s.
    run_id = launch(http, asgi_server, agents, LONG)["runs"][0]["id"]
    wait_for(lambda: first_rounds(run_id, 1), 120, "the first round")
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

    # 3. kill -9 of a worker's agent mid-run: the run fails within 60 s naming its device.
    run_id = launch(http, asgi_server, agents, LONG)["runs"][0]["id"]
    wait_for(lambda: first_rounds(run_id, 1), 120, "the first round")
    failed_after = kill_fails_the_run(run_id, edge2, "edge-2")

    # 4. The agent is offline when the next gang is allocated: the run fails after the claim
    #    deadline, naming it.
    created_at = time.monotonic()
    run_id = launch(http, asgi_server, agents, SHORT)["runs"][0]["id"]
    wait_for(lambda: run_row(run_id).state in FINISHED, 60, "the run to fail")
    run = run_row(run_id)
    assert run.state == "failed" and "edge-2" in run.error and "claim" in run.error, run.error
    assert time.monotonic() - created_at >= settings.ESTUARY["GANG_CLAIM_DEADLINE_S"]

    # 5. The coordinator's agent and the other worker's are free: they run the next job.
    run_id = launch(http, asgi_server, [cloud, edge1], SHORT)["runs"][0]["id"]
    wait_for(lambda: run_row(run_id).state in FINISHED, 120, "the next run")
    run = run_row(run_id)
    assert run.state == "succeeded", run.error
    assert len(series(run_id, "accuracy")) == SHORT["rounds"]
    print(f"cancel stopped every rank in {stopped_after:.1f} s; the killed worker failed the "
          f"run in {failed_after:.1f} s")
