"""A single-device method (no roles) in a distributed experiment: its run executes whole on the
chosen device's agent, which says so in the run's log and result."""
import pytest

from tests.agents.distributed_helpers import launch, run_row, series, start_agents
from tests.fixtures.agents import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: A quick pruning job: the tiny LM, briefly pre-trained, a small evaluation.
COMP_FAST = {"model_size": "tiny", "pretrain_steps": 30, "seq_len": 32, "calibration_size": 8,
             "batch_size": 4, "eval_windows": 4, "task_items": 20, "latency_repeats": 1}


def test_comp_runs_whole_on_the_listed_edge_device(agent_factory, owner, user_http, asgi_server,
                                                   controlplane_worker):
    from controlplane.metrics.models import RunLog

    [edge] = start_agents(agent_factory, [("edge-1", "jetson-nx")])
    experiment = launch(user_http(owner), asgi_server, [edge], COMP_FAST, algorithm="comp")
    [run] = experiment["runs"]
    assert [(slot["name"], slot["workers"]) for slot in run["placement"]] == [("edge-1", [])]
    wait_for(lambda: run_row(run["id"]).state in ("succeeded", "failed", "cancelled"), 240,
             "the pruning run to finish")
    stored = run_row(run["id"])
    assert stored.state == "succeeded", stored.error
    assert stored.result["execution"] == "distributed"
    assert stored.result["single_device"] == "edge-1"
    assert stored.result["device"] == "edge-1"  # its emulated clock is that device's
    assert [step for step, _ in series(run["id"], "perplexity")] == [0, 1]
    lines = list(RunLog.objects.filter(run_id=run["id"]).values_list("line", flat=True))
    assert any("single-device method: the whole run executes on edge-1" in line
               for line in lines), lines
