"""Configs of HAT and its baselines (validated at the edge, trusted inside).

A baseline's config is the experiment's config restricted to the keys it knows, so the shared
serving keys live in :class:`ServingConfig` and each method adds only its own.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ml.config import MethodConfig, ProfileOverride
from ml.models.long_context import DEFAULT_CONTEXT, DEFAULT_EXTEND_STEPS
from ml.models.pretrained import DEFAULT_CONFIG, DEFAULT_STEPS
from ml.models.pretraining import LM_SIZES


class ServingConfig(MethodConfig):
    """Keys every device-cloud serving method shares."""

    testbed: str | list[ProfileOverride] = Field(default="jetson30-a6000",
                                description="Preset or device list; needs a cloud server")
    workers: int = Field(default=4, ge=1, le=300,
                         description="Devices sending a request at the same time (cloud load)")
    prompt_tokens: int = Field(default=128, ge=2, le=8192,
                               description="Prompt length of every request (held-out text)")
    new_tokens: int = Field(default=32, ge=2, le=1024, description="Tokens generated per request")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0,
                               description="Sampling temperature; 0 is greedy decoding")
    served_model: Literal["llama2-7b", "llama2-7b-proportional", "pretrained"] = Field(
        default="llama2-7b", description="Model shape the clock charges for (the real passes "
        "run on the served LM): a Llama-2-7B stand-in (fp16) with the real cut's layer counts, "
        "the same stand-in with every part charged at the served LM's share of its depth "
        "(llama2-7b-proportional), or the served model itself (fp32: our pre-trained LM, or "
        "the checkpoint)")
    lm_size: str | None = Field(
        default=None, description="Serve a deep BPE LM of ml.models.pretraining by size name "
        "(e.g. deep-tiny, hat-12) instead of the 4-block byte-level LM (pre-trained once, "
        "cached); extend_steps and pretrain_steps do not apply")
    cloud_share: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Fraction of the cloud server's compute and "
        "memory bandwidth this service gets (the rest busy with other tenants): below 1 the "
        "cloud congests sooner")
    checkpoint: str | None = Field(
        default=None, description="Local Hugging Face Llama-style folder (config.json, "
        "safetensors weights, tokenizer.json) to serve instead of our pre-trained LM; prompts "
        "and distillation come from the pydoc corpus in its tokenizer")
    pretrain_steps: int = Field(default=DEFAULT_STEPS, ge=1, le=100_000,
                                description="Training steps of the pre-trained LM (cached)")
    context_tokens: int = Field(default=DEFAULT_CONTEXT, ge=16, le=8192,
                                description="Window of the long-context extension of the LM "
                                            "(and of SD's draft LM and the adapter's teacher)")
    extend_steps: int = Field(default=DEFAULT_EXTEND_STEPS, ge=0, le=100_000,
                              description="Long-context extension steps on context_tokens "
                                          "windows (cached); 0 serves the 128-byte-window LM "
                                          "as is")
    cloud_batch_tokens: int = Field(default=4096, ge=1, le=1_000_000,
                                    description="Most tokens the cloud puts in one batch")

    needs_server: ClassVar[bool] = True

    @field_validator("lm_size")
    @classmethod
    def _known_size(cls, value: str | None) -> str | None:
        if value is not None and value not in LM_SIZES:
            raise ValueError(f"unknown LM size {value!r}; known: {', '.join(LM_SIZES)}")
        return value

    @model_validator(mode="after")
    def _one_model(self):
        if self.lm_size is not None and self.checkpoint is not None:
            raise ValueError("lm_size and checkpoint both name the served model: give one")
        return self

    def served_depth(self) -> int | None:
        """Blocks of the served LM when known before loading it (not for a checkpoint)."""
        if self.checkpoint is not None:
            return None
        if self.lm_size is not None:
            return LM_SIZES[self.lm_size].config.n_layers
        return DEFAULT_CONFIG.n_layers


class UShapedConfig(ServingConfig):
    """The U-shaped cut: layers kept on the device before and after the cloud's middle."""

    input_layers: int = Field(default=1, ge=1, le=64,
                              description="Decoder layers of the input submodel (device)")
    output_layers: int = Field(default=1, ge=1, le=64,
                               description="Decoder layers of the output submodel (device)")

    @model_validator(mode="after")
    def _leaves_a_middle(self):
        # a checkpoint's depth is known only once it is loaded (USplit checks it then)
        depth = self.served_depth()
        if depth is not None and self.input_layers + self.output_layers >= depth:
            raise ValueError(f"input_layers + output_layers must leave a middle submodel in the "
                             f"{depth}-layer served LM")
        return self


class HATConfig(UShapedConfig):
    """HAT: U-shaped split, distilled adapter, speculative decoding, prompt chunking."""

    gamma: int = Field(default=4, ge=1, le=32, description="Draft tokens per round")
    adapter_layers: int = Field(default=1, ge=1, le=8, description="Decoder blocks of the adapter")
    distill_steps: int = Field(default=300, ge=1, le=100_000,
                               description="Distillation steps of the adapter (cached)")
    chunk_size: int | None = Field(default=None, ge=1, le=8192,
                                   description="Prompt chunk size; null chooses it per device "
                                               "from the predicted TTFT")
    parallel_drafting: bool = Field(default=True,
                                    description="Keep drafting while a verification is in flight")
    draft_window: int | None = Field(default=64, ge=1, le=8192,
                                     description="Last prompt tokens the draft model prefills "
                                                 "(null: the whole prompt)")


class DeviceCloudSDConfig(ServingConfig):
    """Device-cloud speculative decoding with a separate small draft LM sending raw tokens."""

    draft_checkpoint: str | None = Field(
        default=None, validate_default=True,
        description="Local Hugging Face Llama-style folder of the draft LM, sharing the "
                    "checkpoint's vocabulary (needed with checkpoint); empty: a small LM "
                    "pre-trained on the corpus")

    gamma: int = Field(default=4, ge=1, le=32, description="Draft tokens per round")
    draft_d_model: int | None = Field(default=None, ge=8, le=1024,
                                      description="Width of the draft LM (default: 64 for the "
                                                  "byte-level LM, the served LM's own width "
                                                  "with lm_size)")
    draft_layers: int = Field(default=2, ge=1, le=32, description="Decoder blocks of the draft LM")
    draft_steps: int = Field(default=300, ge=1, le=100_000,
                             description="Training steps of the draft LM (cached)")

    @field_validator("draft_checkpoint")
    @classmethod
    def _draft_for_a_checkpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("checkpoint"):
            raise ValueError("serving a checkpoint needs a draft LM of its vocabulary: give "
                             "its local folder")
        return value

    @model_validator(mode="after")
    def _draft_width(self):
        if self.draft_d_model is not None and self.draft_d_model % 32:
            raise ValueError("draft_d_model must be a multiple of 32 (heads of 32 dimensions)")
        return self
