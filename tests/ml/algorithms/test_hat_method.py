"""HAT and its baselines through the catalogue: configs, a small real run of each, metrics."""
import pytest

from ml import registry
from ml.config import ConfigError
from ml.reporting import MemoryReporter

SMALL = {"workers": 3, "prompt_tokens": 48, "new_tokens": 8, "pretrain_steps": 15,
         "distill_steps": 5, "draft_steps": 5, "testbed": "local-3", "context_tokens": 64,
         "extend_steps": 3}


def test_hat_is_registered_with_its_baselines():
    hat = registry.get("hat")
    assert hat.baselines == ("cloud-only-inference", "u-shaped-inference", "device-cloud-sd")
    for name in hat.baselines:
        registry.get(name)
    assert {"ttft_ms", "tbt_ms", "acceptance_rate", "tokens_per_round", "uplink_bytes_per_token",
            "downlink_bytes_per_token"} <= set(hat.metrics)
    with pytest.raises(ConfigError) as err:
        hat.parse_config({"input_layers": 2, "output_layers": 2})
    assert "config" in err.value.errors or any("layers" in m for m in err.value.errors.values())
    with pytest.raises(ConfigError) as err:
        hat.parse_config({"testbed": [{"profile": "jetson-nx"}]})
    assert "testbed" in err.value.errors  # no cloud server to serve from


def test_hat_and_baselines_run_and_report(tmp_path, monkeypatch):
    monkeypatch.setenv("ESTUARY_DATA_DIR", str(tmp_path))
    results = {}
    for name in ("hat", "cloud-only-inference", "u-shaped-inference", "device-cloud-sd"):
        method = registry.get(name)
        config = method.parse_config({k: v for k, v in SMALL.items()
                                      if k in method.config.model_fields})
        reporter = MemoryReporter()
        results[name] = method.run(config, reporter)
        final = results[name]["final"]
        assert final["ttft_ms"] > 0 and final["tbt_ms"] > 0
        assert reporter.last("ttft_ms") == pytest.approx(final["ttft_ms"])
        assert {p.name for p in reporter.points} >= {"ttft_ms", "tbt_ms", "sim_time_s"}
        assert all(d["tokens"] == 8 for d in results[name]["devices"])
        assert all(p.sim_time_s <= final["sim_time_s"] + 1e-9 for p in reporter.points)
    hat = results["hat"]["final"]
    assert 0 <= hat["acceptance_rate"] <= 1 and hat["tokens_per_round"] >= 1
    # Greedy decoding: HAT, the U-split and SD reproduce cloud-only's tokens (the full model).
    outputs = {name: [d["output"] for d in r["devices"]] for name, r in results.items()}
    assert outputs["hat"] == outputs["cloud-only-inference"] == outputs["u-shaped-inference"] \
        == outputs["device-cloud-sd"]
    # Hidden states go up under HAT (d_model values per position), token ids under the others.
    assert hat["uplink_bytes_per_token"] > results["cloud-only-inference"]["final"][
        "uplink_bytes_per_token"]
    models = results["hat"]["models"]
    assert models["llm_val_perplexity"] > 1
    assert models["llm_context"] == 64 and models["llm_extend_steps"] == 3
    assert {"llm_ppl_0-64", "llm_base_ppl_0-64"} <= set(models)
