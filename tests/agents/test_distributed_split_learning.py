"""Split learning on three real agents (a cloud PS, two edge workers), end to end: ParallelSFL,
whose members talk to their cluster's top worker directly (ml.distributed.peers).

- A short run reproduces its emulated twin's accuracy curve; the PS's agent carries only full
  models.
- kill -9 of a worker's agent mid-run fails the run within 60 s naming its device, with no gap
  in the stored points.

One test function on purpose: starting the agents (each preloads torch) is most of the cost.
"""

import pytest

from tests.agents.distributed_helpers import (FINISHED, kill_fails_the_run, launch, run_row,
                                              series, start_agents)
from tests.agents.test_distributed import emulated_twin
from tests.fixtures.agents import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: Four virtual workers in two clusters, two per edge agent.
CONFIG = {"rounds": 2, "dataset": "digits", "workers": 4, "clusters": 2, "local_iterations": 2,
          "batch_size": 16}
#: Long enough to still be running when the test kills an agent.
LONG = {**CONFIG, "rounds": 1000, "eval_every": 1}


def test_parallelsfl_on_three_local_agents(
        agent_factory, owner, user_http, asgi_server, controlplane_worker):
    http = user_http(owner)
    cloud, edge1, edge2 = start_agents(agent_factory, [
        ("cloud", "a6000-server"), ("edge-1", "jetson-nx"), ("edge-2", "jetson-orin-nano")])
    agents = [cloud, edge1, edge2]

    # 1. The same curve as the emulated twin; the PS only exchanges full models.
    run_id = launch(http, asgi_server, agents, CONFIG, algorithm="parallelsfl")["runs"][0]["id"]
    wait_for(lambda: run_row(run_id).state in FINISHED, 240, "the run to finish")
    run = run_row(run_id)
    assert run.state == "succeeded", run.error
    assert run.result["execution"] == "distributed"
    accuracy = series(run_id, "accuracy")
    twin_accuracy, twin_traffic, twin = emulated_twin(run)
    assert [s for s, _ in accuracy] == [s for s, _ in twin_accuracy] == [1, 2]
    assert [v for _, v in accuracy] == pytest.approx([v for _, v in twin_accuracy], abs=1e-5)
    clusters = len(twin["clusters"])
    assert series(run_id, "traffic_bytes/cloud")[-1][1] == \
        2 * CONFIG["rounds"] * clusters * twin["full_model_bytes"]
    # virtual workers of one agent hand over without a link: measured <= emulated
    assert 0 < series(run_id, "traffic_bytes")[-1][1] <= twin_traffic

    # 2. kill -9 of a worker's agent mid-run: the run fails within 60 s naming its device.
    run_id = launch(http, asgi_server, agents, LONG, algorithm="parallelsfl")["runs"][0]["id"]
    wait_for(lambda: len(series(run_id, "accuracy")) >= 1, 120, "the first round")
    kill_fails_the_run(run_id, edge2, "edge-2")
