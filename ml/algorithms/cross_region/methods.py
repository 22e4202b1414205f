"""The three methods as policies of the one outer loop, and their catalogue entries."""
from __future__ import annotations

from ml.algorithms.cross_region.config import CoCoDCConfig, DiLoCoConfig, StreamingDiLoCoConfig
from ml.algorithms.cross_region.outer_loop import SyncPolicy
from ml.algorithms.cross_region.fragments import make_fragments
from ml.algorithms.cross_region.quantization import payload_bytes
from ml.algorithms.cross_region.training import Setup, train
from ml.algorithms.cross_region.transmission import AdaptiveSchedule, StaggeredSchedule
from ml.registry import Method, register
from ml.reporting import Reporter

METRICS = ("loss", "eval_loss", "perplexity", "traffic_bytes", "sim_time_s", "waiting_time_s",
           "staleness/fragment-<p>")


def diloco_policy(config: DiLoCoConfig, setup: Setup) -> SyncPolicy:
    """One fragment, every H steps, blocking (τ = 0), replicas replaced by the global model."""
    return SyncPolicy(fragments=make_fragments(setup.model, 1),
                      schedule=StaggeredSchedule(config.inner_steps, 1),
                      merge="alpha", alpha=0.0, outer_lr=config.outer_lr,
                      outer_momentum=config.outer_momentum, overlap_steps=0)


def streaming_policy(config: StreamingDiLoCoConfig, setup: Setup) -> SyncPolicy:
    """P strided fragments on a staggered timetable, τ steps of overlap, α-merge."""
    return SyncPolicy(fragments=make_fragments(setup.model, config.fragments,
                                               config.fragment_pattern),
                      schedule=StaggeredSchedule(config.inner_steps, config.fragments),
                      merge="alpha", alpha=config.alpha, outer_lr=config.outer_lr,
                      outer_momentum=config.outer_momentum, bits=config.pseudo_grad_bits,
                      overlap_steps=config.overlap_steps)


def cocodc_policy(config: CoCoDCConfig, setup: Setup) -> SyncPolicy:
    """Streaming's fragments with delay compensation and Adaptive Transmission."""
    fragments = make_fragments(setup.model, config.fragments, config.fragment_pattern)
    if config.transmission == "adaptive":
        schedule = AdaptiveSchedule(config.inner_steps, config.transmissions_per_round
                                    or link_capacity(config, setup, fragments))
    else:
        schedule = StaggeredSchedule(config.inner_steps, config.fragments)
    return SyncPolicy(fragments=fragments, schedule=schedule, merge="compensate",
                      dc_lambda=config.dc_lambda, outer_lr=config.outer_lr,
                      outer_momentum=config.outer_momentum, bits=config.pseudo_grad_bits,
                      overlap_steps=config.overlap_steps)


def link_capacity(config: StreamingDiLoCoConfig, setup: Setup, fragments) -> int:
    """N: fragment reduces the WAN carries back to back in H steps, sized by the largest one.

    Ours [I]: N = ⌊H / τ_max⌋ with τ_max the largest fragment's reduce time in steps, so sends
    every ⌊H/N⌋ ≥ τ_max steps never queue on the link (one reduce in flight at a time).
    """
    largest = max(payload_bytes(f.tensor_numels, config.pseudo_grad_bits) for f in fragments)
    return max(1, config.inner_steps // max(1, setup.wan.overlap_steps(largest)))


def run_diloco(config: DiLoCoConfig, reporter: Reporter) -> dict:
    """DiLoCo on the emulated WAN; see :mod:`ml.algorithms.cross_region`."""
    return train(config, reporter, lambda setup: diloco_policy(config, setup))


def run_streaming_diloco(config: StreamingDiLoCoConfig, reporter: Reporter) -> dict:
    """Streaming DiLoCo on the emulated WAN; see :mod:`ml.algorithms.cross_region`."""
    return train(config, reporter, lambda setup: streaming_policy(config, setup))


def run_cocodc(config: CoCoDCConfig, reporter: Reporter) -> dict:
    """CoCoDC on the emulated WAN; see :mod:`ml.algorithms.cross_region`."""
    return train(config, reporter, lambda setup: cocodc_policy(config, setup))


DILOCO = register(Method(
    name="diloco",
    paper="Douillard et al., DiLoCo: Distributed Low-Communication Training of Language Models, "
          "arXiv 2311.08105",
    summary="Regions train replicas with AdamW for H steps, then take a blocking outer Nesterov "
            "step on the averaged pseudo-gradient.",
    config=DiLoCoConfig, run=run_diloco, baselines=(), metrics=METRICS, family="cross-region"))

STREAMING_DILOCO = register(Method(
    name="streaming-diloco",
    paper="Douillard et al., Streaming DiLoCo with overlapping communication, arXiv 2501.18512",
    summary="DiLoCo with fragments synchronised on a staggered timetable, their reduces "
            "overlapping τ steps of training, merged as α·local + (1 − α)·global.",
    config=StreamingDiLoCoConfig, run=run_streaming_diloco, baselines=("diloco",),
    metrics=METRICS, family="cross-region"))

COCODC = register(Method(
    name="cocodc",
    paper="CoCoDC: communication-computation overlapping with delay compensation for "
          "cross-region LLM training, arXiv 2504.17672",
    summary="Streaming DiLoCo with Taylor-expansion delay compensation of stale fragments and "
            "Adaptive Transmission that picks which fragment to send from the link's capacity "
            "and the parameters' change.",
    config=CoCoDCConfig, run=run_cocodc, baselines=("diloco", "streaming-diloco"),
    metrics=METRICS, family="cross-region"))
