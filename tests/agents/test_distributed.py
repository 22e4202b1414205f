"""Distributed runs on three real agents (a cloud coordinator, two edge workers) reproduce their
emulated twins: the same accuracy curve for the same seed and config, and the measured model
traffic equals the emulated count up to framing."""
import pytest

from tests.agents.distributed_helpers import launch, run_row, series, start_agents
from tests.fixtures.agents import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: Small real runs: sklearn's digits, three virtual workers on two edge agents.
CONFIG = {"rounds": 3, "dataset": "digits", "workers": 3}


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


def test_distributed_splitfed_and_fedavg_match_their_emulated_twins(
        agent_factory, owner, user_http, asgi_server, controlplane_worker):
    from controlplane.metrics.models import MetricPoint

    cloud, edge1, edge2 = start_agents(agent_factory, [
        ("cloud", "a6000-server"), ("edge-1", "jetson-nx"), ("edge-2", "jetson-orin-nano")])
    experiment = launch(user_http(owner), asgi_server, [cloud, edge1, edge2], CONFIG,
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
