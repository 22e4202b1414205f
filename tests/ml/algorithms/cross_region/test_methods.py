"""DiLoCo, Streaming DiLoCo and CoCoDC end to end: the equivalences the papers imply, the WAN
clock, and the catalogue entries. Tiny models and a few steps keep each test to a second or two."""
from __future__ import annotations

import math

import pytest
import torch

from ml import registry
from ml.algorithms.cross_region.config import CoCoDCConfig, DiLoCoConfig, StreamingDiLoCoConfig
from ml.algorithms.cross_region.outer_loop import OuterLoop
from ml.algorithms.cross_region.policies import cocodc_policy, diloco_policy, streaming_policy
from ml.algorithms.cross_region.training import build_setup
from ml.config import ConfigError
from ml.reporting import Cancelled, MemoryReporter

TINY = dict(d_model=16, layers=2, heads=2, batch_size=4, seq_len=16, eval_windows=8,
            eval_every=4, warmup_steps=2)


def run_loop(config, make_policy, steps: int) -> OuterLoop:
    setup = build_setup(config)
    loop = OuterLoop(setup.replicas, make_policy(config, setup), setup.wan)
    for _ in range(steps):
        loop.step()
    return loop


def params_of(loop: OuterLoop, replica: int = 0) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in loop.replicas[replica].params.items()}


def plain_training(config: DiLoCoConfig, steps: int) -> dict[str, torch.Tensor]:
    """The same replica (same init, data and AdamW) trained alone, with no outer loop at all."""
    replica = build_setup(config).replicas[0]
    for _ in range(steps):
        replica.train_step()
    return {n: p.detach().clone() for n, p in replica.params.items()}


class TestDiLoCoReducesToPlainTraining:
    def test_h1_one_worker_outer_lr_1_no_momentum_equals_plain_training(self):
        config = DiLoCoConfig(**TINY, workers=1, inner_steps=1, rounds=8, outer_lr=1.0,
                              outer_momentum=0.0)
        diloco = params_of(run_loop(config, diloco_policy, 8))
        plain = plain_training(config, 8)
        for name in plain:
            torch.testing.assert_close(diloco[name], plain[name], rtol=1e-5, atol=1e-6)

    def test_an_outer_lr_below_1_makes_it_differ(self):
        config = DiLoCoConfig(**TINY, workers=1, inner_steps=1, rounds=8, outer_lr=0.5,
                              outer_momentum=0.0)
        diloco = params_of(run_loop(config, diloco_policy, 8))
        plain = plain_training(config, 8)
        assert max((diloco[n] - plain[n]).abs().max() for n in plain) > 1e-4


class TestCoCoDCWithoutDelayIsStreamingWithAlpha0:
    def config(self, overlap: int) -> CoCoDCConfig:
        return CoCoDCConfig(**TINY, workers=2, inner_steps=8, rounds=3, fragments=4,
                            overlap_steps=overlap, alpha=0.0, transmission="staggered")

    def test_tau_0_gives_identical_replicas(self):
        config = self.config(overlap=0)
        cocodc = run_loop(config, cocodc_policy, 24)
        streaming = run_loop(config, streaming_policy, 24)
        assert sum(cocodc.stats.sends) == sum(streaming.stats.sends) == 12
        for m in range(2):
            a, b = params_of(cocodc, m), params_of(streaming, m)
            assert all(torch.equal(a[n], b[n]) for n in a)

    def test_with_overlap_the_compensation_changes_the_result(self):
        config = self.config(overlap=2)
        cocodc, streaming = params_of(run_loop(config, cocodc_policy, 24)), params_of(
            run_loop(config, streaming_policy, 24))
        assert not all(torch.equal(cocodc[n], streaming[n]) for n in cocodc)


class TestEmulatedWan:
    def test_diloco_blocks_every_region_for_the_whole_all_reduce(self):
        config = DiLoCoConfig(**TINY, workers=4, inner_steps=5, rounds=2)
        loop = run_loop(config, diloco_policy, 10)
        reduce_s = loop.wan.allreduce_seconds(loop.payload[0])
        assert reduce_s > 0
        assert loop.stats.blocked_s == pytest.approx(2 * reduce_s)
        for region in loop.wan.regions:
            assert region.clock_s == pytest.approx(10 * loop.wan.step_seconds + 2 * reduce_s)

    def test_streaming_overlaps_reduces_that_fit_in_tau_steps(self):
        config = StreamingDiLoCoConfig(**TINY, workers=4, inner_steps=8, rounds=3, fragments=4)
        loop = run_loop(config, streaming_policy, 24)
        assert all(tau >= 1 for tau in loop.tau)
        assert loop.stats.blocked_s == pytest.approx(0.0, abs=1e-9)
        assert loop.wan.now() == pytest.approx(24 * loop.wan.step_seconds)

    def test_tau_is_the_reduce_time_over_the_step_time_rounded_up(self):
        config = StreamingDiLoCoConfig(**TINY, workers=4, inner_steps=8, fragments=4,
                                       wan_bandwidth_mbps=100, wan_rtt_ms=80)
        setup = build_setup(config)
        loop = OuterLoop(setup.replicas, streaming_policy(config, setup), setup.wan)
        workload, step_s = setup.wan.workload, setup.wan.step_seconds
        assert step_s == pytest.approx(6 * 150e6 * 256 * 1024 / 25_000e9)  # the h100 profile
        for p, payload in enumerate(loop.payload):
            chunk = workload.wire_bytes(payload) / 4
            reduce_s = 2 * 3 * (0.040 + math.ceil(chunk) * 8 / 100e6)  # ring: 6 hops
            assert loop.tau[p] == math.ceil(reduce_s / step_s)

    def test_a_slower_link_needs_more_overlap_steps(self):
        fast = build_setup(StreamingDiLoCoConfig(**TINY, wan_bandwidth_mbps=1000)).wan
        slow = build_setup(StreamingDiLoCoConfig(**TINY, wan_bandwidth_mbps=10)).wan
        assert slow.overlap_steps(10**6) > fast.overlap_steps(10**6)

    def test_four_bit_pseudo_gradients_cut_the_traffic_about_eightfold(self):
        full = run_loop(StreamingDiLoCoConfig(**TINY, inner_steps=8), streaming_policy, 16)
        four = run_loop(StreamingDiLoCoConfig(**TINY, inner_steps=8, pseudo_grad_bits=4),
                        streaming_policy, 16)
        assert 7.0 < full.wan.traffic_bytes / four.wan.traffic_bytes <= 8.0


class TestCatalogue:
    def test_the_three_methods_are_registered_with_their_baselines(self):
        assert registry.get("diloco").baselines == ()
        assert registry.get("streaming-diloco").baselines == ("diloco",)
        assert registry.get("cocodc").baselines == ("diloco", "streaming-diloco")
        schema = registry.get("cocodc").json_schema()["properties"]
        assert {"dc_lambda", "transmissions_per_round", "alpha", "inner_steps"} <= set(schema)

    def test_bad_config_names_the_field(self):
        with pytest.raises(ConfigError) as err:
            registry.get("cocodc").parse_config({"fragments": 99})
        assert "fragments" in err.value.errors
        with pytest.raises(ConfigError) as err:
            registry.get("streaming-diloco").parse_config({"pseudo_grad_bits": 3})
        assert "pseudo_grad_bits" in err.value.errors

    def test_cocodc_run_reports_perplexity_traffic_time_and_staleness(self):
        method = registry.get("cocodc")
        reporter = MemoryReporter()
        result = method.run(method.parse_config({**TINY, "rounds": 2, "inner_steps": 8}), reporter)
        final = result["final"]
        assert final["perplexity"] == pytest.approx(math.exp(final["eval_loss"]))
        assert 1 < final["perplexity"] < 256  # better than uniform over bytes
        assert final["traffic_bytes"] > 0 and final["sim_time_s"] > 0
        assert [p.step for p in reporter.series("perplexity")] == [4, 8, 12, 16]
        staleness = reporter.series("staleness/fragment-0")
        assert staleness and all(0 <= p.value <= 16 for p in staleness)
        assert sum(f["sends"] for f in result["fragments"]) >= 4

    def test_a_cancelled_run_stops(self):
        class StopAtOnce(MemoryReporter):
            def should_stop(self) -> bool:
                return True

        reporter = StopAtOnce()
        with pytest.raises(Cancelled):
            registry.get("diloco").run(DiLoCoConfig(**TINY, rounds=50, inner_steps=4), reporter)
        assert max(p.step for p in reporter.points) == 4

    def test_same_seed_same_run(self):
        config = StreamingDiLoCoConfig(**TINY, inner_steps=8, rounds=1, seed=3)
        first, second = (registry.get("streaming-diloco").run(config, MemoryReporter())
                         for _ in range(2))
        assert first["final"] == second["final"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cocodc_trains_on_cuda_under_bf16_autocast():
    method = registry.get("cocodc")
    result = method.run(method.parse_config({**TINY, "rounds": 1, "inner_steps": 8,
                                             "device": "cuda"}), MemoryReporter())
    assert math.isfinite(result["final"]["perplexity"])


def test_adaptive_transmission_never_resends_a_fragment_still_in_flight():
    config = CoCoDCConfig(**TINY, inner_steps=8, rounds=3, fragments=4, overlap_steps=3,
                          transmissions_per_round=8)  # a send every step, each in flight 3
    loop = run_loop(config, cocodc_policy, 24)
    assert loop.policy.schedule.period == 1
    assert sum(loop.stats.sends) >= 20
    intervals = [i for per_fragment in loop.stats.send_intervals for i in per_fragment[1:]]
    assert min(intervals) >= 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only host's error")
def test_asking_for_cuda_without_a_gpu_is_a_config_error_naming_device():
    method = registry.get("diloco")
    with pytest.raises(ConfigError) as err:
        method.run(method.parse_config({**TINY, "rounds": 1, "inner_steps": 2, "device": "cuda"}),
                   MemoryReporter())
    assert "device" in err.value.errors


def test_cpu_is_the_default_device_and_runs_without_autocast():
    from ml.algorithms.cross_region.replica import autocast_for

    assert DiLoCoConfig().device == "cpu"
    assert build_setup(DiLoCoConfig(**TINY)).device.type == "cpu"
    assert not autocast_for(torch.device("cpu"))._enabled


def test_cocodc_sends_less_often_over_a_slower_link():
    """N = ⌊H / τ_max⌋: a slower WAN makes a fragment's reduce span more steps, so fewer fit."""
    periods = {}
    for mbps in (10_000, 3_000, 1_000):
        config = CoCoDCConfig(**TINY, inner_steps=40, fragments=4, wan_bandwidth_mbps=mbps,
                              emulated_tokens_per_step=8 * 1024)
        setup = build_setup(config)
        loop = OuterLoop(setup.replicas, cocodc_policy(config, setup), setup.wan)
        periods[mbps] = loop.policy.schedule.period
        assert periods[mbps] >= max(loop.tau)  # a send never queues behind the previous one
    assert periods[10_000] < periods[3_000] < periods[1_000]
