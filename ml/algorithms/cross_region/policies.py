"""The three methods as policies of the one outer loop (:mod:`.outer_loop`)."""
from __future__ import annotations

from ml.algorithms.cross_region.config import CoCoDCConfig, DiLoCoConfig, StreamingDiLoCoConfig
from ml.algorithms.cross_region.fragments import make_fragments
from ml.algorithms.cross_region.outer_loop import SyncPolicy
from ml.algorithms.cross_region.quantization import payload_bytes
from ml.algorithms.cross_region.training import Setup
from ml.algorithms.cross_region.transmission import AdaptiveSchedule, StaggeredSchedule


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
