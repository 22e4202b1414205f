"""Configs of ``diloco``, ``streaming-diloco`` and ``cocodc``, each extending the one before.

Each baseline's config is the experiment's config restricted to the keys it knows, so a CoCoDC
experiment hands its data, model, WAN and outer-optimiser settings to both baselines unchanged.
Defaults (80 steps of a 4-block, width-32 decoder in 4 regions) finish in well under a minute
on one CPU thread, for the dashboard demo; every size can be scaled up.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from ml.config import MethodConfig, ProfileOverride

#: Units of the decoder that fragments are made of: embedding, each block, final norm, head.
NON_BLOCK_UNITS = 3


class DiLoCoConfig(MethodConfig):
    """Regions, data, model, inner and outer optimisers, evaluation and the emulated WAN."""

    testbed: str | list[ProfileOverride] = Field(
        default="cross-region-4",
        description="A preset name or a list of device profiles; its devices are the regions")
    dataset: Literal["pydoc", "cpython"] = Field(
        default="pydoc",
        description="Text corpus (pydoc: CPython's pydoc topics; cpython: its standard-library "
                    "sources and the pydoc topics, ~10 MB; both offline)")
    tokenizer: Literal["byte", "bpe"] = Field(
        default="byte",
        description="byte: one token per byte, the last 10% held out; bpe: a byte-level BPE of "
                    "vocab_size tokens trained on the corpus's training documents (every "
                    "tenth document held out), cached in the data folder")
    vocab_size: int = Field(default=1024, ge=257, le=65_536,
                            description="BPE vocabulary size (tokenizer bpe only)")
    workers: int = Field(default=4, ge=1, le=32,
                         description="Regions (M), each training a replica on its own shard")
    rounds: int = Field(default=4, ge=1, le=100_000,
                        description="Outer rounds; the run takes rounds × inner_steps steps")
    inner_steps: int = Field(default=20, ge=1, le=10_000,
                             description="H: inner AdamW steps per outer round")
    batch_size: int = Field(default=16, ge=1, le=4096, description="Sequences per inner step")
    seq_len: int = Field(default=32, ge=8, le=4096, description="Tokens per sequence")
    d_model: int = Field(default=32, ge=8, le=4096, description="Decoder width")
    layers: int = Field(default=4, ge=1, le=64, description="Decoder blocks")
    heads: int = Field(default=2, ge=1, le=64, description="Attention heads")
    inner_lr: float = Field(default=2e-3, gt=0, le=1, description="Peak inner AdamW learning rate")
    weight_decay: float = Field(default=0.1, ge=0, le=1, description="Inner AdamW weight decay")
    warmup_steps: int = Field(default=10, ge=0, le=100_000,
                              description="Linear warm-up steps before the cosine decay")
    outer_lr: float = Field(default=0.7, gt=0, le=2,
                            description="Outer Nesterov SGD learning rate on pseudo-gradients")
    outer_momentum: float = Field(default=0.9, ge=0, lt=1,
                                  description="Outer Nesterov momentum (0: plain SGD)")
    eval_every: int = Field(default=10, ge=1, le=100_000,
                            description="Evaluate held-out perplexity every this many steps")
    eval_windows: int = Field(default=128, ge=1, le=100_000,
                              description="Held-out windows per evaluation")
    wan_bandwidth_mbps: float | None = Field(
        default=None, gt=0, le=1_000_000,
        description="WAN bandwidth of every region in Mbit/s (empty: the testbed's)")
    wan_rtt_ms: float | None = Field(
        default=None, ge=0, le=10_000,
        description="WAN round-trip time of every region in ms (empty: the testbed's)")
    emulated_params: int | None = Field(
        default=150_000_000, ge=1, le=10**12,
        description="Parameters the emulated clock and traffic are charged for (empty: the "
                    "trained model's own); default: the authors' Llama-150M")
    emulated_tokens_per_step: int | None = Field(
        default=256 * 1024, ge=1, le=10**9,
        description="Tokens per inner step the emulated compute is charged for (empty: "
                    "batch_size × seq_len); default: the authors' 256 × 1024")

    @field_validator("heads")
    @classmethod
    def _heads_divide_width(cls, heads: int, info: ValidationInfo) -> int:
        d_model = info.data.get("d_model")
        if d_model is not None and (d_model % heads or (d_model // heads) % 2):
            raise ValueError(f"must divide d_model ({d_model}) into heads of even size")
        return heads


class StreamingDiLoCoConfig(DiLoCoConfig):
    """Fragments, overlap, merge and quantisation of Streaming DiLoCo."""

    outer_lr: float = Field(default=0.4, gt=0, le=2,
                            description="Outer Nesterov SGD learning rate on pseudo-gradients")
    fragments: int = Field(default=4, ge=1, le=64,
                           description="P: fragments synchronised one at a time")
    fragment_pattern: Literal["strided", "sequential"] = Field(
        default="strided", description="Layer unit i goes to fragment i mod P, or runs of units")
    overlap_steps: int | None = Field(
        default=None, ge=0, le=10_000,
        description="τ: steps a fragment's reduce overlaps with training (empty: from the WAN)")
    alpha: float = Field(default=0.5, ge=0, le=1,
                         description="Merge: α·local + (1 − α)·global when a fragment arrives")
    pseudo_grad_bits: Literal[4, 8, 32] = Field(
        default=32, description="Bits per exchanged pseudo-gradient value (32: no quantisation)")

    @field_validator("fragments")
    @classmethod
    def _fragments_fit(cls, fragments: int, info: ValidationInfo) -> int:
        layers, inner_steps = info.data.get("layers"), info.data.get("inner_steps")
        if layers is not None and fragments > layers + NON_BLOCK_UNITS:
            raise ValueError(f"must be at most the model's {layers + NON_BLOCK_UNITS} layer "
                             "units (layers + embedding, norm, head)")
        if inner_steps is not None and fragments > inner_steps:
            raise ValueError(f"must be at most inner_steps ({inner_steps})")
        return fragments


class CoCoDCConfig(StreamingDiLoCoConfig):
    """CoCoDC's delay compensation and adaptive transmission."""

    alpha: float = Field(default=0.5, ge=0, le=1,
                         description="α of the streaming-diloco baseline's merge (CoCoDC "
                                     "replaces the merge by its delay compensation)")

    dc_lambda: float = Field(default=1.0, ge=0, le=100,
                             description="λ₀: delay-compensation strength (0: replay only)")
    transmissions_per_round: int | None = Field(
        default=None, ge=1, le=10_000,
        description="N: fragment sends per H steps (empty: what the link carries)")
    transmission: Literal["adaptive", "staggered"] = Field(
        default="adaptive",
        description="adaptive: CoCoDC's scheduler; staggered: Streaming DiLoCo's timetable "
                    "(an ablation of the compensation alone)")
