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


def test_a_local_hugging_face_checkpoint_is_served_exactly_by_every_method(tmp_path,
                                                                             monkeypatch):
    from tests.fixtures.llama import llama_folder

    monkeypatch.setenv("ESTUARY_DATA_DIR", str(tmp_path))
    served = llama_folder(tmp_path / "llm", vocab_size=300, layers=4, seed=0)
    draft = llama_folder(tmp_path / "draft", vocab_size=300, layers=1, seed=1)
    config = {**SMALL, "checkpoint": str(served), "draft_checkpoint": str(draft)}
    outputs = {}
    for name in ("hat", "cloud-only-inference", "u-shaped-inference", "device-cloud-sd"):
        method = registry.get(name)
        result = method.run(method.parse_config({k: v for k, v in config.items()
                                                 if k in method.config.model_fields}),
                            MemoryReporter())
        assert result["models"]["llm_checkpoint"] == str(served)
        assert result["models"]["llm_params"] > 0 and result["models"]["llm_val_perplexity"] > 1
        outputs[name] = [d["output"] for d in result["devices"]]
    # Greedy, the full model decides every token whatever the protocol; the subword vocabulary
    # (300 ids) is the checkpoint's, not our byte-level LM's.
    assert outputs["hat"] == outputs["cloud-only-inference"] == outputs["u-shaped-inference"] \
        == outputs["device-cloud-sd"]
    assert max(t for out in outputs["hat"] for t in out) < 300


def test_a_checkpoint_without_a_draft_or_with_an_unfit_one_names_the_field(tmp_path):
    from tests.fixtures.llama import llama_folder

    sd = registry.get("device-cloud-sd")
    with pytest.raises(ConfigError) as err:
        sd.parse_config({"checkpoint": str(tmp_path / "llm")})
    assert list(err.value.errors) == ["draft_checkpoint"]
    with pytest.raises(ConfigError) as err:  # the folder is checked when the job loads it
        registry.get("cloud-only-inference").run(registry.get("cloud-only-inference")
                                                 .parse_config({**{k: SMALL[k] for k in (
                                                     "workers", "testbed")},
                                                     "checkpoint": str(tmp_path / "absent")}),
                                                 MemoryReporter())
    assert list(err.value.errors) == ["checkpoint"] and "does not exist" in \
        err.value.errors["checkpoint"]
    served = llama_folder(tmp_path / "llm", vocab_size=300, layers=4)
    other = llama_folder(tmp_path / "other", vocab_size=280, layers=1)
    with pytest.raises(ConfigError) as err:
        sd.run(sd.parse_config({**{k: v for k, v in SMALL.items() if k in sd.config.model_fields},
                                "checkpoint": str(served), "draft_checkpoint": str(other)}),
               MemoryReporter())
    assert list(err.value.errors) == ["draft_checkpoint"] and "280" in \
        err.value.errors["draft_checkpoint"]
    hat = registry.get("hat")  # a cut that leaves no middle in a 4-block checkpoint
    with pytest.raises(ConfigError) as err:
        hat.run(hat.parse_config({**{k: v for k, v in SMALL.items()
                                     if k in hat.config.model_fields},
                                  "checkpoint": str(served), "input_layers": 2,
                                  "output_layers": 2}), MemoryReporter())
    assert list(err.value.errors) == ["input_layers"]
