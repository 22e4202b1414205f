"""Cross-region training on three real agents (a cloud coordinator, two cloud regions), end
to end through the API: a diloco run reproduces its emulated twin's perplexity curve, and
kill -9 of a region's agent mid-run fails the run within 60 s naming its device.

One test function on purpose: starting the agents (each preloads torch) is most of the cost.
"""

import pytest

from tests.agents.distributed_helpers import (FINISHED, kill_fails_the_run, launch, run_row,
                                              series, start_agents)
from tests.fixtures.agents import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: A tiny decoder on two regions; the emulated clock charged for the real model.
TINY = {"workers": 2, "rounds": 2, "inner_steps": 4, "eval_every": 4, "batch_size": 4,
        "seq_len": 16, "d_model": 16, "layers": 2, "eval_windows": 16,
        "emulated_params": None, "emulated_tokens_per_step": None}
#: Long enough to still be running when the test acts on it.
LONG = {**TINY, "rounds": 10_000, "fragments": 2}


def emulated_twin(run) -> list[tuple[int, float]]:
    """The run's config (its testbed: the placement's regions) run emulated here."""
    from ml import registry
    from ml.reporting import MemoryReporter

    method = registry.get(run.method)
    reporter = MemoryReporter()
    method.run(method.parse_config(run.config), reporter)
    return [(p.step, p.value) for p in reporter.series("perplexity")]


def test_cross_region_runs_on_cloud_agents_and_a_killed_region_fails_the_run(
        agent_factory, owner, user_http, asgi_server, controlplane_worker):
    http = user_http(owner)
    agents = start_agents(agent_factory, [
        ("cloud", "a6000-server"), ("region-1", "h100"), ("region-2", "h100")])

    # 1. The regions are the cloud agents; the run reproduces its emulated twin.
    run_id = launch(http, asgi_server, agents, TINY, algorithm="diloco")["runs"][0]["id"]
    wait_for(lambda: run_row(run_id).state in FINISHED, 240, "the diloco run to finish")
    run = run_row(run_id)
    assert run.state == "succeeded", run.error
    assert [slot["name"] for slot in run.placement] == ["cloud", "region-1", "region-2"]
    assert [entry["name"] for entry in run.config["testbed"]] == ["region-1", "region-2"]
    perplexity = series(run_id, "perplexity")
    assert [step for step, _ in perplexity] == [4, 8]
    assert perplexity == emulated_twin(run)
    assert series(run_id, "measured_traffic_bytes/pseudo-gradient")[-1][1] > 0

    # 2. kill -9 of a region's agent mid-run: the run fails within 60 s naming its device.
    run_id = launch(http, asgi_server, agents, LONG,
                    algorithm="streaming-diloco")["runs"][0]["id"]
    wait_for(lambda: len(series(run_id, "perplexity")) >= 1, 180, "the first evaluation")
    kill_fails_the_run(run_id, agents[2], "region-2", metric=None)
