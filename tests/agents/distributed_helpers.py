"""Helpers for distributed runs on real agents (tests/agents, tests/faults)."""
from __future__ import annotations

import re
import threading

from tests.fixtures.agents import AgentProcess


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
