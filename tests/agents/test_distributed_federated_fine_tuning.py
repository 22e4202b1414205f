"""Federated fine-tuning on three real agents (a cloud server, two edge clients' hosts): kill -9
of a client's agent mid-run fails the run within 60 s naming its device, with no gap in the
stored points (the shape of section 3 of tests/agents/test_distributed.py)."""

import pytest

from tests.agents.distributed_helpers import (kill_fails_the_run, launch, run_row, series,
                                              start_agents)
from tests.fixtures.agents import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: FedSpine on the tiny base, long enough to still be running when the test acts on it.
LONG = {"rounds": 1000, "base": "tiny", "workers": 3, "local_steps": 4, "batch_size": 8,
        "test_samples": 40, "prune_every": 2, "target_sparsity": 0.4}


def test_killing_a_clients_agent_fails_the_fedspine_run_naming_its_device(
        agent_factory, owner, user_http, asgi_server, controlplane_worker, subprocess_env):
    # The agents' role processes share this data folder: pre-train the tiny base once here.
    from ml.algorithms.federated_fine_tuning.task import load_base

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESTUARY_DATA_DIR", subprocess_env["ESTUARY_DATA_DIR"])
        load_base("tiny")

    http = user_http(owner)
    cloud, edge1, edge2 = start_agents(agent_factory, [
        ("cloud", "a6000-server"), ("edge-1", "jetson-nx"), ("edge-2", "jetson-orin-nano")])

    run_id = launch(http, asgi_server, [cloud, edge1, edge2], LONG,
                    algorithm="fedspine")["runs"][0]["id"]
    wait_for(lambda: len(series(run_id, "accuracy")) >= 1, 180, "the first round")
    assert run_row(run_id).state == "running"
    assert [slot["name"] for slot in run_row(run_id).placement] == ["cloud", "edge-1", "edge-2"]
    kill_fails_the_run(run_id, edge2, "edge-2")
