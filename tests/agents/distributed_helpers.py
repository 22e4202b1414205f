"""Helpers for distributed runs on real agents (tests/agents, tests/faults)."""
from __future__ import annotations

import re
import signal
import threading
import time

from tests.fixtures.agents import AgentProcess, wait_for

FINISHED = ("succeeded", "failed", "cancelled")


def start_agents(agent_factory, names_profiles: list[tuple[str, str]]) -> list[AgentProcess]:
    """Start the agents side by side (each takes seconds to load torch); in the given order."""
    started: dict[str, AgentProcess] = {}
    errors: list[BaseException] = []

    def one(name: str, profile: str) -> None:
        try:
            started[name] = agent_factory(name, profile)
        except BaseException as exc:  # noqa: BLE001  (re-raised below, in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=one, args=pair) for pair in names_profiles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [started[name] for name, _ in names_profiles]


def launch(http, server: str, devices: list[AgentProcess], config: dict,
           algorithm: str = "fedavg", baselines: tuple[str, ...] = (), seed: int = 3) -> dict:
    response = http.post(f"{server}/api/v1/experiments/", json={
        "name": f"distributed {algorithm}", "algorithm": algorithm, "config": config,
        "baselines": list(baselines), "seed": seed, "execution": "distributed",
        "devices": [agent.device_id for agent in devices]}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def run_row(run_id: str):
    from controlplane.experiments.models import Run

    return Run.objects.get(pk=run_id)


def series(run_id: str, name: str) -> list[tuple[int, float]]:
    from controlplane.metrics.models import MetricPoint

    return list(MetricPoint.objects.filter(run_id=run_id, name=name).order_by("step")
                .values_list("step", "value"))


def job_ids(run_id: str) -> dict[int, str]:
    from controlplane.experiments.models import Job

    return {rank: str(job_id) for rank, job_id in
            Job.objects.filter(run_id=run_id).values_list("rank", "id")}


def role_pids(agent: AgentProcess, job_id: str) -> list[int]:
    """The role processes the agent started for ``job_id`` that it says ended."""
    return [int(pid) for pid in
            re.findall(rf"role process (\d+) of job {job_id} ended", agent.output())]


def assert_points_have_no_gap(run_id: str, metric: str = "accuracy") -> None:
    """Every metric's stored steps run 1..n (or 0..n) without a hole (and ``metric`` is among
    them); the store is unique on (run, name, step), so none is duplicated."""
    from controlplane.metrics.models import MetricPoint

    names = set(MetricPoint.objects.filter(run_id=run_id).values_list("name", flat=True))
    assert metric in names, sorted(names)
    for name in names:
        steps = [step for step, _ in series(run_id, name)]
        assert steps == list(range(steps[0], steps[0] + len(steps))), (name, steps)
        assert steps[0] in (0, 1), (name, steps[:3])


def kill_fails_the_run(run_id: str, agent: AgentProcess, device: str,
                       metric: str | None = "accuracy") -> float:
    """kill -9 ``agent`` mid-run; assert the run fails within 60 s naming ``device`` and, for
    a method reporting every round (``metric``; None: one that reports at other steps), that
    the points reported before have no gap; the seconds it took."""
    agent.send(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: run_row(run_id).state in FINISHED, 60, "the run to fail")
    failed_after = time.monotonic() - killed_at
    run = run_row(run_id)
    assert run.state == "failed" and device in run.error, run.error
    if metric is not None:
        assert_points_have_no_gap(run_id, metric)
    print(f"{run.method}: kill -9 of {device}'s agent failed the run in {failed_after:.1f} s: "
          f"{run.error}")
    return failed_after
