"""The CoCoDC reproduction: its declaration (targets fixed, equal traffic primary, >= 30 outer
rounds, >= 5 seeds, a WAN sweep that moves tau), steps to target read from a curve, and one
tiny run repeating exactly (a BPE on the pydoc corpus, a few steps)."""
import math

import pytest

from ml.reproduction import cocodc, harness
from ml.reproduction.declaration import Regime


def test_declaration_fixes_the_targets_and_the_comparisons():
    decl = cocodc.DECLARATION
    assert decl.arxiv == "2504.17672" and len(decl.seeds) >= 5
    primary, secondary = decl.claims
    assert primary.key == "cocodc-equal-traffic"
    (eq,), (free,) = primary.comparisons, secondary.comparisons
    assert (eq.method, eq.baseline, eq.metric) == ("cocodc-N=P", "streaming-diloco",
                                                    "steps_to_target")
    assert (free.method, free.baseline) == ("cocodc", "streaming-diloco")
    assert eq.kind == "ratio" and eq.better == "lower"
    assert eq.claimed == pytest.approx(1 / 0.79)
    # N = P: CoCoDC sends as many fragments per H as Streaming DiLoCo (the same bytes)
    arm = decl.arm("cocodc-N=P").overrides
    assert arm["transmissions_per_round"] == arm["fragments"] == \
        decl.arm("streaming-diloco").overrides["fragments"]
    assert "transmissions_per_round" not in decl.arm("cocodc").overrides
    # targets are constants of the declaration, written into it (not derived from the runs)
    assert decl.target["perplexity"] == cocodc.TARGET_PPL > 1.0
    assert cocodc.TARGET_PPL < cocodc.MID_TARGET_PPL == decl.target["mid_perplexity"]
    assert 1.0 < cocodc.QUICK_TARGETS["perplexity"] < cocodc.QUICK_TARGETS["mid_perplexity"]
    assert cocodc.FULL["rounds"] >= 30 and cocodc.FULL["layers"] >= 8
    assert cocodc.FULL["dataset"] == "cpython" and cocodc.FULL["tokenizer"] == "bpe"
    assert decl.target["budget_steps"] == cocodc.FULL["rounds"] * cocodc.FULL["inner_steps"]
    rtts = {r.settings["wan_rtt_ms"] for r in decl.regimes}
    bandwidths = {r.settings["wan_bandwidth_mbps"] for r in decl.regimes}
    assert len(rtts) >= 3 and len(bandwidths) >= 2
    assert decl.launch["algorithm"] == "cocodc" and decl.launch["config"]["rounds"] >= 30


def test_steps_to_target_interpolates_in_log_perplexity_and_censors():
    steps, ppl = [5.0, 10.0, 15.0], [100.0, 40.0, 10.0]
    sim, traffic = [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]
    hit = cocodc.steps_to(steps, ppl, sim, traffic, 20.0, 15.0)
    frac = (math.log(40) - math.log(20)) / (math.log(40) - math.log(10))
    assert hit["steps"] == pytest.approx(10 + 5 * frac) and not hit["censored"]
    assert hit["time_s"] == pytest.approx(2 + frac)
    assert hit["traffic"] == pytest.approx(20 + 10 * frac)
    miss = cocodc.steps_to(steps, ppl, sim, traffic, 5.0, 15.0)
    assert miss["censored"] and miss["steps"] == 15.0


def test_a_tiny_run_repeats_exactly_and_n_equal_p_sends_as_often_as_streaming(monkeypatch):
    settings = {**cocodc.QUICK, "dataset": "pydoc", "vocab_size": 300, "d_model": 16,
                "layers": 8, "batch_size": 2, "seq_len": 16, "inner_steps": 4, "rounds": 2,
                "warmup_steps": 2, "eval_every": 2, "eval_windows": 4}
    regime = Regime("tiny", "tiny", {"wan_bandwidth_mbps": 10_000.0, "wan_rtt_ms": 10.0})
    context = {"settings": settings, "targets": {"perplexity": 250.0,
                                                 "mid_perplexity": 290.0}}
    decl = cocodc.DECLARATION
    jobs = [(regime, decl.arm(label), 3) for label in ("streaming-diloco", "cocodc-N=P")]
    first = harness.run_all(decl, cocodc.run_arm, jobs, context, log=lambda line: None)
    second = harness.run_all(decl, cocodc.run_arm, jobs[1:], context, log=lambda line: None)
    strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in (first[1], second[0])]
    assert strip[0] == strip[1]
    streaming, equal = (r["metrics"] for r in first)
    # the same number of fragment sends (bytes differ only by which fragments go)
    assert streaming["sends"] == equal["sends"] == 8.0
    assert streaming["send_period"] == equal["send_period"] == 1.0
    for record in first:
        assert record["curve"]["time_s"] == [2.0, 4.0, 6.0, 8.0]
        steps = record["metrics"]["steps_to_target"]
        assert 0 < steps <= 8.0
        assert ("steps_to_target" in record["censored"]) == (steps == 8.0)
