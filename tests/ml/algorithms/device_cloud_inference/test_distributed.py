"""The device-cloud methods as real processes over torch.distributed on 127.0.0.1 (launch_local):
the device roles on two edge ranks (three devices, so one rank hosts two), the cloud on rank 0.
A distributed run computes what the emulated run does, in the engine's order: the same tokens,
the same emulated clock, and measured payload equal to the emulated traffic count."""
import os
import signal
import time

import pytest

from ml import registry
from ml.distributed import LocalLaunch, launch_local
from ml.models.pretrained import DEFAULT_CONFIG
from ml.reporting import MemoryReporter

#: Tiny models (cached once for the module); the served model's own shape and precision are
#: what the clock counts, so the emulated bytes are the real tensors' bytes.
SMALL = {"workers": 3, "prompt_tokens": 40, "new_tokens": 6, "pretrain_steps": 15,
         "distill_steps": 5, "draft_steps": 5, "testbed": "local-3", "context_tokens": 64,
         "extend_steps": 3, "served_model": "pretrained", "seed": 5}
METHODS = ("hat", "u-shaped-inference", "cloud-only-inference", "device-cloud-sd")
EMULATED_CLOCK = ("ttft_ms", "tbt_ms", "sim_time_s", "traffic_bytes", "acceptance_rate",
                  "tokens_per_round", "uplink_bytes_per_token", "downlink_bytes_per_token",
                  "prefill_uplink_bytes")


@pytest.fixture(scope="module", autouse=True)
def data_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # the ranks inherit it
        patch.setenv("ESTUARY_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        yield


def config_of(method: str, **extra) -> dict:
    fields = registry.get(method).config.model_fields
    return {k: v for k, v in {**SMALL, **extra}.items() if k in fields}


def emulated(method: str, config: dict):
    entry = registry.get(method)
    reporter = MemoryReporter()
    return entry.run(entry.parse_config(config), reporter), reporter


def points(reporter, name):
    return [(p.step, p.value, p.sim_time_s) for p in reporter.series(name)]


@pytest.mark.parametrize("method, extra", [
    ("hat", {}), ("u-shaped-inference", {}), ("cloud-only-inference", {}),
    ("device-cloud-sd", {}),
    # HAT samples only on the device (cloud-only only in the cloud): exact when sampling too
    ("hat", {"temperature": 0.9})])
def test_three_local_ranks_reproduce_the_emulated_serving(method, extra):
    config = config_of(method, **extra)
    result, reporter = launch_local(method, config, 3, timeout_s=30)
    twin, twin_reporter = emulated(method, config)
    assert result["execution"] == "distributed"
    assert [s["workers"] for s in result["placement"]] == [[], [0, 2], [1]]
    # token for token, device by device
    assert [d["output"] for d in result["devices"]] == [d["output"] for d in twin["devices"]]
    assert all(len(d["output"]) == config["new_tokens"] for d in result["devices"])
    # the emulated clock is the same engine run: every point identical
    for name in EMULATED_CLOCK:
        assert points(reporter, name) == points(twin_reporter, name), name
    for d in twin["devices"]:
        assert points(reporter, f"ttft_ms/{d['device']}") == \
            points(twin_reporter, f"ttft_ms/{d['device']}")
    # measured payload == the emulated count (hidden states, token ids, verdicts); the JSON
    # headers (framing) are counted apart
    final = result["final"]
    assert final["measured_traffic_bytes"] == twin["final"]["traffic_bytes"] > 0
    assert result["traffic_bytes"] == final["measured_traffic_bytes"]
    assert 0 < final["framing_bytes"] < 2000 * result["messages"]
    kinds = result["measured_traffic_by_kind"]
    assert kinds == twin["traffic_by_kind"] and set(kinds) == {"prefill", "decode"}
    devices, prompt, new = config["workers"], config["prompt_tokens"], config["new_tokens"]
    if method in ("hat", "u-shaped-inference"):
        # every prompt position's input hidden state up, its middle hidden state down; and
        # nothing but hidden states in the rounds
        hidden = 4 * DEFAULT_CONFIG.d_model  # one fp32 hidden state
        assert kinds["prefill"] == 2 * devices * prompt * hidden
        assert kinds["decode"] % hidden == 0
    elif method == "cloud-only-inference":
        # the prompt's ids up (4 bytes each), every generated id down
        assert kinds == {"prefill": devices * (4 * prompt + 4), "decode": devices * 4 * (new - 1)}
    # the measured wall-clock figures sit beside the emulated ones
    assert final["wall_ttft_ms"] > 0 and final["wall_tbt_ms"] > 0
    assert reporter.last("wall_ttft_ms") == pytest.approx(final["wall_ttft_ms"])
    assert all(d["wall_ttft_ms"] > 0 for d in result["devices"])
    assert "wall_ttft_ms" not in twin["final"]


#: Long enough to still be serving when a rank is killed (the context window holds 64).
LONG = {"workers": 12, "prompt_tokens": 8, "new_tokens": 50}


def test_a_killed_device_rank_fails_the_cloud_with_peer_lost_naming_its_device(tmp_path):
    launch = LocalLaunch("u-shaped-inference", config_of("u-shaped-inference", **LONG), 3,
                         timeout_s=5, workdir=tmp_path).start()
    try:
        deadline = time.monotonic() + 120
        while not any(p.name == "setup_wall_s" for p in launch.points()):
            assert time.monotonic() < deadline, launch.log(0)[-3000:]
            assert all(p.poll() is None for p in launch.procs.values()), launch.log(0)[-3000:]
            time.sleep(0.05)
        killed_at = time.monotonic()
        os.kill(launch.pid(2), signal.SIGKILL)
        outcomes = launch.wait(timeout_s=60)
        elapsed = time.monotonic() - killed_at
    finally:
        launch.kill()
    lost = launch.placement[2]
    assert outcomes[2] is None
    for rank in (0, 1):
        assert outcomes[rank]["error_type"] == "PeerLost", outcomes[rank]
        assert outcomes[rank]["lost"]["device"] == lost.device
        assert lost.name in outcomes[rank]["error"]
    assert elapsed < 60
    assert not any(p.name == "ttft_ms" for p in launch.points())  # it never finished
