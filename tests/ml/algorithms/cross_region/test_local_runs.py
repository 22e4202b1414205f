"""Cross-region training over local ranks (one process per region, ml.distributed.launch_local):
the same seed gives the emulated run's curves bit for bit; traffic is the emulated count; a
killed region fails the run naming its device."""
import os
import signal
import time

import pytest

from ml import registry
from ml.algorithms.cross_region.fragments import make_fragments
from ml.algorithms.cross_region.quantization import payload_bytes
from ml.distributed import LocalLaunch, launch_local
from ml.reporting import MemoryReporter

TINY = {"rounds": 2, "inner_steps": 6, "batch_size": 4, "seq_len": 16, "d_model": 16,
        "layers": 2, "eval_every": 3, "eval_windows": 16, "seed": 3, "workers": 2,
        "emulated_params": None, "emulated_tokens_per_step": None}
CURVES = ("loss", "eval_loss", "perplexity", "sim_time_s", "traffic_bytes", "waiting_time_s",
          "staleness/fragment-0")
TIMEOUT_S = 120.0  # generous: ranks start slowly on a loaded 2-core machine


def emulated(method: str, config: dict) -> tuple[dict, MemoryReporter]:
    entry = registry.get(method)
    reporter = MemoryReporter()
    return entry.run(entry.parse_config(config), reporter), reporter


def assert_same_curves(emulated_points: MemoryReporter, distributed_points: MemoryReporter):
    for name in CURVES:
        expected = [(p.step, p.value) for p in emulated_points.series(name)]
        assert expected, name
        assert [(p.step, p.value) for p in distributed_points.series(name)] == expected, name


def measured(points: MemoryReporter, name: str) -> float:
    return points.series(name)[-1].value


@pytest.mark.parametrize("method, extra", [
    ("diloco", {}),
    # τ = 1 (fragments arrive a step late: compensation replays real local progress) and
    # N = 3 sends per 6 steps, so the third send is chosen by the all-reduced score
    ("cocodc", {"fragments": 2, "overlap_steps": 1, "transmissions_per_round": 3}),
])
def test_one_rank_per_region_reproduces_the_emulated_run(method, extra):
    config = {**TINY, **extra}
    emu_result, emu_points = emulated(method, config)
    result, points = launch_local(method, config, config["workers"] + 1, timeout_s=TIMEOUT_S)
    assert_same_curves(emu_points, points)
    assert result["execution"] == "distributed"
    assert result["fragments"] == emu_result["fragments"]
    # gather at region 0 + broadcast = 2 (M − 1) · B, the emulated ring's count (M = 2 | B),
    # but the emulator charges a reduce whole when it starts, and the mean of one still in
    # flight when the run ends never comes back
    unreturned = sum(emu_result["fragments"][p]["payload_bytes"]
                     for p in emu_result["in_flight_at_end"])
    assert measured(points, "measured_traffic_bytes/pseudo-gradient") == \
        emu_result["final"]["traffic_bytes"] - (config["workers"] - 1) * unreturned
    if method == "cocodc":  # one float64 per region and score, not in the emulated count
        assert measured(points, "measured_traffic_bytes/score") > 0
    assert [p.step for p in points.series("round_time_s")] == [6, 12]


def test_quantised_fragments_go_up_as_codes_and_come_back_as_the_exact_mean():
    config = {**TINY, "fragments": 3, "pseudo_grad_bits": 4, "overlap_steps": 2}
    emu_result, emu_points = emulated("streaming-diloco", config)
    result, points = launch_local("streaming-diloco", config, 3, timeout_s=TIMEOUT_S)
    assert_same_curves(emu_points, points)
    assert sum(f["sends"] for f in emu_result["fragments"]) > 0
    # the emulator charges b bits both ways; the wire carries b-bit codes up and the fp32 mean
    # down (so the mean stays the emulated one, bit for bit); a reduce in flight at the end
    # has gone up only
    entry = registry.get("streaming-diloco")
    model = entry.program.setup(entry.parse_config(config), None).setup.model
    expected = 0
    for p, (frag, stats) in enumerate(zip(make_fragments(model, 3), emu_result["fragments"])):
        up, down = payload_bytes(frag.tensor_numels, 4), payload_bytes(frag.tensor_numels, 32)
        assert stats["payload_bytes"] == up
        expected += stats["sends"] * (up + down) - down * (p in emu_result["in_flight_at_end"])
    assert measured(points, "measured_traffic_bytes/pseudo-gradient") == expected


def test_a_killed_region_fails_the_run_naming_its_device(tmp_path):
    config = {**TINY, "rounds": 400, "eval_every": 100_000}
    launch = LocalLaunch("streaming-diloco", config, 3, timeout_s=15, workdir=tmp_path).start()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not launch.points():
            assert time.monotonic() < deadline, launch.log(0)[-3000:]
            assert all(p.poll() is None for p in launch.procs.values()), launch.log(0)[-3000:]
            time.sleep(0.1)
        killed_at = time.monotonic()
        os.kill(launch.pid(2), signal.SIGKILL)
        outcomes = launch.wait(timeout_s=60)
        elapsed = time.monotonic() - killed_at
    finally:
        launch.kill()
    lost = launch.placement[2]
    assert outcomes[2] is None
    for rank in (0, 1):  # the coordinator and the surviving region
        assert outcomes[rank]["error_type"] == "PeerLost", outcomes[rank]
        assert outcomes[rank]["lost"]["device"] == lost.device
        assert f"device {lost.name}" in outcomes[rank]["error"]
    assert elapsed < 60
