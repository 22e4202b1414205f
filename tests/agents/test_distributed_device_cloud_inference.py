"""HAT on three real agents (a cloud coordinator, two edge devices hosting the virtual devices),
end to end through the control plane.

- The distributed run reproduces its emulated twin token for token, with the same emulated
  clock, and its measured payload equals the emulated traffic count.
- kill -9 of an edge agent while the devices are being served fails the run within 60 s naming
  its device.

One test function on purpose: starting the agents (each preloads torch) is most of the cost.
"""

import pytest

from tests.agents.distributed_helpers import (FINISHED, kill_fails_the_run, launch, run_row,
                                              series, start_agents)
from tests.fixtures.agents import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: Tiny models, the served model's own shape on the clock (so emulated bytes are real bytes).
SMALL = {"workers": 3, "prompt_tokens": 24, "new_tokens": 6, "pretrain_steps": 15,
         "distill_steps": 5, "testbed": "local-3", "context_tokens": 64, "extend_steps": 3,
         "served_model": "pretrained"}
#: Still serving when the agent is killed (the context window holds 64 positions).
LONG = {**{k: v for k, v in SMALL.items() if k != "distill_steps"}, "workers": 12,
        "prompt_tokens": 8, "new_tokens": 50}


def emulated(method: str, config: dict) -> dict:
    from ml import registry
    from ml.reporting import MemoryReporter

    entry = registry.get(method)
    return entry.run(entry.parse_config(config), MemoryReporter())


def test_hat_runs_distributed_on_three_local_agents(
        agent_factory, owner, user_http, asgi_server, controlplane_worker, subprocess_env,
        monkeypatch):
    # The agents' role processes load the models from the data folder they share: build them
    # once here (the emulated twin would anyway) instead of three times at once.
    monkeypatch.setenv("ESTUARY_DATA_DIR", subprocess_env["ESTUARY_DATA_DIR"])
    emulated("hat", SMALL)
    http = user_http(owner)
    cloud, edge1, edge2 = start_agents(agent_factory, [
        ("cloud", "a6000-server"), ("edge-1", "jetson-nx"), ("edge-2", "jetson-orin-nano")])
    agents = [cloud, edge1, edge2]

    # 1. HAT matches its emulated twin (the placement's testbed) token for token.
    run_id = launch(http, asgi_server, agents, SMALL, algorithm="hat")["runs"][0]["id"]
    wait_for(lambda: run_row(run_id).state in FINISHED, 240, "the distributed run to finish")
    run = run_row(run_id)
    assert run.state == "succeeded", run.error
    assert run.result["execution"] == "distributed"
    assert [slot["name"] for slot in run.placement] == ["cloud", "edge-1", "edge-2"]
    twin = emulated("hat", run.config)
    assert [d["output"] for d in run.result["devices"]] == \
        [d["output"] for d in twin["devices"]]
    assert series(run_id, "ttft_ms")[-1][1] == pytest.approx(twin["final"]["ttft_ms"], rel=1e-12)
    measured = series(run_id, "measured_traffic_bytes")[-1][1]
    assert measured == twin["final"]["traffic_bytes"] > 0
    assert series(run_id, "wall_ttft_ms")[-1][1] > 0
    print(f"hat on agents: measured {measured:.0f} B = emulated; wall TTFT "
          f"{run.result['final']['wall_ttft_ms']:.0f} ms beside emulated "
          f"{twin['final']['ttft_ms']:.1f} ms")

    # 2. kill -9 of an edge agent while its devices are served: the run fails within 60 s,
    #    naming the device.
    run_id = launch(http, asgi_server, agents, LONG, algorithm="u-shaped-inference")[
        "runs"][0]["id"]
    wait_for(lambda: series(run_id, "setup_wall_s"), 180, "every device role to be built")
    # On an idle machine serving may already be over when the kill lands (the cloud then
    # loses edge-2 while gathering the ranks' counters): either way the run must fail naming it.
    kill_fails_the_run(run_id, edge2, "edge-2", metric=None)
