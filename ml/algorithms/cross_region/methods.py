"""Catalogue entries of ``diloco``, ``streaming-diloco`` and ``cocodc``: one role program each,
the same loop under its policy (:mod:`.policies`, :mod:`.roles`)."""
from __future__ import annotations

from ml.algorithms.cross_region.config import CoCoDCConfig, DiLoCoConfig, StreamingDiLoCoConfig
from ml.algorithms.cross_region.policies import cocodc_policy, diloco_policy, streaming_policy
from ml.algorithms.cross_region.roles import METRICS, emulated, role_program
from ml.registry import Method, register

DILOCO_PROGRAM = role_program(diloco_policy)
STREAMING_DILOCO_PROGRAM = role_program(streaming_policy)
COCODC_PROGRAM = role_program(cocodc_policy)

DILOCO = register(Method(
    name="diloco",
    paper="Douillard et al., DiLoCo: Distributed Low-Communication Training of Language Models, "
          "arXiv 2311.08105",
    summary="Regions train replicas with AdamW for H steps, then take a blocking outer Nesterov "
            "step on the averaged pseudo-gradient.",
    config=DiLoCoConfig, run=emulated(DILOCO_PROGRAM), baselines=(), metrics=METRICS,
    family="cross-region", program=DILOCO_PROGRAM))

STREAMING_DILOCO = register(Method(
    name="streaming-diloco",
    paper="Douillard et al., Streaming DiLoCo with overlapping communication, arXiv 2501.18512",
    summary="DiLoCo with fragments synchronised on a staggered timetable, their reduces "
            "overlapping τ steps of training, merged as α·local + (1 − α)·global.",
    config=StreamingDiLoCoConfig, run=emulated(STREAMING_DILOCO_PROGRAM),
    baselines=("diloco",), metrics=METRICS,
    family="cross-region", program=STREAMING_DILOCO_PROGRAM))

COCODC = register(Method(
    name="cocodc",
    paper="CoCoDC: communication-computation overlapping with delay compensation for "
          "cross-region LLM training, arXiv 2504.17672",
    summary="Streaming DiLoCo with Taylor-expansion delay compensation of stale fragments and "
            "Adaptive Transmission that picks which fragment to send from the link's capacity "
            "and the parameters' change.",
    config=CoCoDCConfig, run=emulated(COCODC_PROGRAM), baselines=("diloco", "streaming-diloco"),
    metrics=METRICS,
    family="cross-region", program=COCODC_PROGRAM))
