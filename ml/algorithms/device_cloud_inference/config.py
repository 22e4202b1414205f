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
    served_model: Literal["llama2-7b", "pretrained"] = Field(
        default="llama2-7b", description="Model shape the clock charges for (the real passes "
        "run on the served LM): a Llama-2-7B stand-in (fp16) or the served model itself (fp32: "
        "our pre-trained LM, or the checkpoint)")
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


class UShapedConfig(ServingConfig):
    """The U-shaped cut: layers kept on the device before and after the cloud's middle."""

    input_layers: int = Field(default=1, ge=1, le=64,
                              description="Decoder layers of the input submodel (device)")
    output_layers: int = Field(default=1, ge=1, le=64,
                               description="Decoder layers of the output submodel (device)")

    @model_validator(mode="after")
    def _leaves_a_middle(self):
        # a checkpoint's depth is known only once it is loaded (USplit checks it then)
        if self.checkpoint is None and \
                self.input_layers + self.output_layers >= DEFAULT_CONFIG.n_layers:
            raise ValueError(f"input_layers + output_layers must leave a middle submodel in the "
                             f"{DEFAULT_CONFIG.n_layers}-layer pre-trained LM")
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
    draft_d_model: int = Field(default=64, ge=8, le=1024, description="Width of the draft LM")
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
        if self.draft_d_model % 32:
            raise ValueError("draft_d_model must be a multiple of 32 (heads of 32 dimensions)")
        return self
