"""The FedSpine reproduction: its declaration (target fixed, >= 50 rounds, >= 5 seeds, sparse
well before the end, links on which the rank costs time, every baseline at equal sparsity), and
one tiny run repeating exactly."""
import pytest

from ml import registry
from ml.reproduction import fedspine, harness
from ml.reproduction.declaration import Regime


def test_declaration_fixes_the_target_and_compares_with_each_baseline():
    decl = fedspine.DECLARATION
    assert decl.arxiv == "2501.02438" and len(decl.seeds) >= 5
    assert 100 not in decl.seeds  # the pilot's seed
    faster, accuracy = decl.claims
    assert [c.baseline for c in faster.comparisons] == list(fedspine.BASELINES)
    assert [c.baseline for c in accuracy.comparisons] == list(fedspine.BASELINES)
    assert all(c.kind == "ratio" and c.better == "lower" and c.claimed == 1.4
               and c.metric == "time_to_target_s" for c in faster.comparisons)
    assert all(c.kind == "difference" and c.scale == 100 and c.claimed == 0.4
               for c in accuracy.comparisons)
    # the target is a constant of the declaration, above chance (5 classes)
    assert decl.target["accuracy"] == fedspine.TARGET_ACCURACY > 0.2
    assert fedspine.FULL["rounds"] >= 50
    spine = decl.arm("fedspine").overrides
    assert spine["prune_rounds"] <= fedspine.FULL["rounds"] // 2
    for arm in decl.arms:  # equal sparsity
        assert arm.overrides["target_sparsity"] == fedspine.SPARSITY
        config = fedspine.run_config(decl.regime(fedspine.HEADLINE), arm, fedspine.FULL, 0)
        method = registry.get(arm.method)
        method.parse_config({k: v for k, v in config.items() if k in method.config.model_fields})
    scales = sorted(r.settings["link_scale"] for r in decl.regimes)
    assert scales[0] <= 0.1 and scales[-1] >= 1.0
    slow = fedspine.testbed(0.1)
    assert [d["uplink_mbps"] for d in slow[:3]] == pytest.approx([2.0, 4.0, 10.0])
    assert decl.launch["algorithm"] == "fedspine" and decl.launch["config"]["rounds"] >= 50


def test_the_pilot_rule_takes_the_lowest_plateau_less_two_points():
    curves = {"a": [0.1] * 5 + [0.70] * 10, "b": [0.2] * 5 + [0.655] * 10}
    assert fedspine.pilot_target(curves) == pytest.approx(0.63)


def test_a_tiny_run_repeats_exactly_and_reaches_the_sparsity():
    settings = {**fedspine.QUICK, "base": "tiny", "rounds": 3, "local_steps": 4,
                "batch_size": 8, "test_samples": 40}
    regime = Regime("tiny", "tiny", {"link_scale": 0.1})
    context = {"settings": settings, "accuracy": 0.3,
               "overrides": {"prune_every": 2, "prune_rounds": 2}}
    decl = fedspine.DECLARATION
    jobs = [(regime, decl.arm("fedspine"), 7), (regime, decl.arm("fedlora@S"), 7)]
    first = harness.run_all(decl, fedspine.run_arm, jobs, context, log=lambda line: None)
    second = harness.run_all(decl, fedspine.run_arm, jobs[:1], context, log=lambda line: None)
    strip = [{k: v for k, v in r.items() if k not in ("wall_s", "cpu_s")}
             for r in (first[0], second[0])]
    assert strip[0] == strip[1]
    for record in first:
        m = record["metrics"]
        assert m["final_sparsity"] == pytest.approx(fedspine.SPARSITY, abs=0.03)
        assert m["sparse_at_round"] <= 2
        assert 0 < m["time_to_target_s"] <= m["sim_time_s"]
        assert ("time_to_target_s" in record["censored"]) == \
            (max(record["curve"]["accuracy"]) < 0.3)
        assert len(record["curve"]["time_s"]) == 3
        assert all(len(c["ranks"]) == 3 for c in record["clients"].values())
    # fedlora's rank is fixed; fedspine's bandit picks within 2-16
    assert first[1]["metrics"]["mean_rank"] == 8
    assert 2 <= first[0]["metrics"]["mean_rank"] <= 16
