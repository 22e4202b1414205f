"""The HAT reproduction's declaration: claims and bounds fixed in advance, the regimes the issue
asks for, and a headline launch config that the method accepts."""
import math

import pytest

from ml import registry
from ml.reproduction import hat
from ml.testbed import resolve_testbed


def test_claims_are_41_percent_reductions_against_each_baseline():
    decl = hat.DECLARATION
    assert len(decl.seeds) >= 5 and decl.headline == "mixed-10"
    pairs = {(c.comparisons[0].metric, c.comparisons[0].baseline) for c in decl.claims}
    assert pairs == {(m, b) for m in ("ttft_ms", "tbt_ms") for b in hat.BASELINES}
    for claim in decl.claims:
        (c,) = claim.comparisons
        assert (c.method, c.kind, c.better) == ("hat", "ratio", "lower")
        assert c.claimed == pytest.approx(1 / 0.59)  # -41%: baseline / HAT >= 1.69
    assert math.isclose(decl.as_dict()["target"]["claimed_ratio"], 1 / 0.59, rel_tol=1e-3)


def test_regimes_sweep_rtt_uplink_device_type_count_and_congestion():
    settings = [r.settings for r in hat.DECLARATION.regimes]
    assert {s["rtt_ms"] for s in settings} == {10.0, 50.0, 100.0}
    assert {s["uplink_mbps"] for s in settings} == {None, 10.0, 100.0}
    assert {s["devices"] for s in settings} == {"mixed", "tx2", "nx", "orin"}
    assert {s["workers"] for s in settings} == {1, 10, 30}
    assert min(s["cloud_share"] for s in settings) < 1
    # every regime changes one factor of the headline (or the count with the cloud's share)
    head = hat.DECLARATION.regime("mixed-10").settings
    for s in settings:
        changed = {k for k in s if s[k] != head[k]}
        assert len(changed) <= 1 or changed == {"workers", "cloud_share"}


def test_testbed_of_a_regime_sets_types_rtt_and_uplink():
    assert hat.devices(10) == ["jetson-tx2"] * 4 + ["jetson-nx"] * 3 + ["jetson-agx-orin"] * 3
    assert hat.devices(1) == ["jetson-tx2"] and hat.devices(3, "orin") == ["jetson-agx-orin"] * 3
    bed = resolve_testbed(hat.testbed(10, "nx", rtt_ms=100.0, uplink_mbps=10.0), workers=10)
    assert len(bed.workers) == 10 and bed.server.profile.name == "a6000-server"
    assert {(d.profile.name, d.profile.rtt_ms, d.profile.uplink_mbps) for d in bed.workers} == \
        {("jetson-nx", 100.0, 10.0)}
    assert bed.latency_s(bed.workers[0], bed.server) == 0.05


def test_the_headline_launch_and_every_regime_parse_as_hat_configs():
    decl = hat.DECLARATION
    assert decl.launch["algorithm"] == "hat" and decl.launch["baselines"] == list(hat.BASELINES)
    config = registry.get("hat").parse_config(decl.launch["config"])
    assert config.lm_size == "hat-12" and config.served_model == "llama2-7b-proportional"
    assert config.workers == 10 and config.prompt_tokens == 256
    for regime in decl.regimes:
        for arm in decl.arms:
            method = registry.get(arm.method)
            values = {k: v for k, v in hat.run_config(regime, hat.FULL, 3).items()
                      if k in method.config.model_fields}
            parsed = method.parse_config(values)
            assert parsed.seed == 3 and parsed.cloud_share == regime.settings["cloud_share"]


def test_serving_config_refuses_bad_sizes_and_shares():
    parse = registry.get("hat").parse_config
    with pytest.raises(Exception, match="lm_size"):
        parse({"lm_size": "no-such-size"})
    with pytest.raises(Exception, match="cloud_share"):
        parse({"cloud_share": 0})
    with pytest.raises(Exception, match="middle"):
        parse({"lm_size": "hat-12", "input_layers": 6, "output_layers": 6})


def test_describe_counts_the_pairs_whose_four_outputs_agree():
    def run(arm, seed, outputs):
        return {"regime": "r", "arm": arm, "seed": seed, "models": {}, "metrics": {},
                "outputs_sha256": hat.outputs_digest(outputs)}
    runs = [run(a.label, 0, [[1, 2]]) for a in hat.ARMS]
    runs += [run(a.label, 1, [[1, 2]] if a.label != "hat" else [[1, 3]]) for a in hat.ARMS]
    assert hat.describe(runs)[-1] == ("Greedy outputs identical across the four methods in 1 "
                                      "of 2 (regime, seed) pairs.")


def test_v2_supersedes_v1_with_a_new_served_model_and_v1s_draft_budget():
    from ml.models.pretraining import LM_SIZES
    from ml.reproduction import hat_v2

    v1, v2 = hat.DECLARATION, hat_v2.DECLARATION
    assert v2.key != v1.key and v2.version == 2 and v1.key in v2.supersedes
    # v1's claims, arms, seeds, headline and regimes (reordered by priority, none changed)
    assert (v2.claims, v2.arms, v2.seeds, v2.headline) == (v1.claims, v1.arms, v1.seeds,
                                                           v1.headline)
    assert v2.regimes[0].key == v2.headline
    assert sorted(v2.regimes, key=lambda r: r.key) == sorted(v1.regimes, key=lambda r: r.key)
    served = LM_SIZES[hat_v2.LM_SIZE]
    assert served.corpus == "cpython" and served.config.n_layers == 12
    assert served.config.max_seq_len >= 256 + 64  # prompt + continuation and drafts
    sd = registry.get("device-cloud-sd")
    # SD's draft keeps the method's default budget (v1's): the page's launch, which passes SD
    # only HAT's keys, then trains the declared draft
    assert hat_v2.FULL_V2["draft_steps"] == sd.config.model_fields["draft_steps"].default == 300
    assert "draft_steps" not in v2.launch["config"]
    for regime in v2.regimes:
        values = {k: v for k, v in hat.run_config(regime, hat_v2.FULL_V2, 0).items()
                  if k in sd.config.model_fields}
        parsed = sd.parse_config(values)
        assert (parsed.lm_size, parsed.draft_steps, parsed.draft_layers) == \
            (hat_v2.LM_SIZE, hat_v2.DRAFT_STEPS, 2)
    config = registry.get("hat").parse_config(v2.launch["config"])
    assert config.lm_size == hat_v2.LM_SIZE and config.workers == 10


def test_a_run_records_its_own_cpu_time(tmp_path, monkeypatch):
    """As the split-FL, COMP and FedSpine runs do: the report sums it per regime."""
    from ml.reproduction.declaration import Regime

    monkeypatch.setenv("ESTUARY_DATA_DIR", str(tmp_path))
    regime = Regime("tiny", "3 mixed", {"workers": 3, "devices": "mixed", "rtt_ms": 50.0,
                                        "uplink_mbps": None, "cloud_share": 1.0})
    small = {"prompt_tokens": 48, "new_tokens": 8, "pretrain_steps": 15, "distill_steps": 5,
             "draft_steps": 5, "context_tokens": 64, "extend_steps": 3}
    record = hat.run_arm(regime, hat.ARMS[0], 0, {"settings": small})
    assert record["metrics"]["ttft_ms"] > 0
    assert 0 < record["cpu_s"] and 0 < record["wall_s"]
