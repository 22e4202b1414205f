"""End to end: daphne and a real agent as separate processes, an experiment launched through the
REST API, and a script watching it over a real WebSocket. What arrives live (points and the
agent's log lines) must equal what the server stored, and the run must succeed."""
import asyncio

import pytest

from tests.agents.test_jobs import SMALL, launch
from tests.fixtures.servers import ws_connect

pytestmark = pytest.mark.django_db(transaction=True)

FINISHED = {"succeeded", "failed", "cancelled"}


async def watch(url: str, token: str, run_id: str, timeout_s: float) -> dict:
    """Everything the WebSocket says about run ``run_id`` until it finishes: its points and
    log lines (history first, then live), the states it went through, the message types."""
    seen = {"points": [], "logs": [], "states": [], "types": []}
    async with ws_connect(url, token=token) as ws:
        history = await ws.receive_json()
        seen["types"].append(history["type"])
        seen["points"] += history["points"].get(run_id, [])
        seen["logs"] += history["logs"].get(run_id, [])
        state = next(run["state"] for run in history["runs"] if run["id"] == run_id)
        seen["states"].append(state)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while state not in FINISHED:
            message = await ws.receive_json(timeout=max(1.0, deadline - loop.time()))
            seen["types"].append(message["type"])
            if message["type"] == "points" and message["run"] == run_id:
                seen["points"] += message["points"]
            elif message["type"] == "log" and message["run"] == run_id:
                seen["logs"] += message["lines"]
            elif message["type"] == "run" and message["run"]["id"] == run_id:
                state = message["run"]["state"]
                seen["states"].append(state)
    return seen


def test_points_and_log_lines_arrive_live_as_stored(agent_factory, owner, user_http,
                                                    asgi_server):
    from controlplane.experiments.models import Run

    http = user_http(owner)
    agent = agent_factory("cloud-live")
    experiment = launch(http, asgi_server, agent, SMALL, "watched live")
    run_id = experiment["runs"][0]["id"]
    url = f"{asgi_server.replace('http://', 'ws://')}/ws/experiments/{experiment['id']}/"

    seen = asyncio.run(watch(url, owner.api_token, run_id, timeout_s=180))

    run = Run.objects.get(pk=run_id)
    assert run.state == "succeeded", run.error
    assert seen["states"][-1] == "succeeded"
    assert seen["types"][0] == "history" and "points" in seen["types"]  # some came live
    # Points: every stored one arrived exactly once, in a batch or the history.
    stored = http.get(f"{asgi_server}/api/v1/runs/{run_id}/metrics/", timeout=30).json()
    rows = [[p["name"], p["step"], p["value"], p["sim_time_s"], p["wall_time_s"]]
            for p in stored["points"]]
    assert sorted(seen["points"]) == rows
    steps = sorted(step for name, step, *_ in seen["points"] if name == "accuracy")
    assert steps == list(range(1, SMALL["rounds"] + 1))
    # Log lines: the agent's lines reached the server (logs API) and the live view, in order.
    lines = [line["line"] for line in
             http.get(f"{asgi_server}/api/v1/runs/{run_id}/logs/", timeout=30).json()["lines"]]
    assert seen["logs"] == lines
    assert lines[0].startswith("fedavg starting on this agent")
    assert lines[-1] == "fedavg finished"
