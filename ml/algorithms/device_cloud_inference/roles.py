"""The roles of the device-cloud methods: each method is a policy of the one serving loop
(:mod:`.serving`), and its :class:`RoleProgram` runs that loop in both runtimes.

- **Device role** (the workers: one virtual device per request, several per edge rank when
  there are more devices than ranks): the input and output submodels and the draft model
  (HAT's adapter, SD's draft LM), or just the prompt (cloud-only) -- :mod:`.devices`.
- **Cloud role** (the coordinator): the event engine, the middle submodel (or the whole LLM),
  verification for SD and cloud-only sampling, and the batching of every device's requests.

What crosses the wire per method (payload; token lists and pass descriptions travel in the
JSON headers): HAT and the U-split send input hidden states up and the middle's hidden states
down; cloud-only sends token ids up and each generated id down; SD sends draft ids up (and the
draft distributions when sampling) and a verdict (accepted, token) down.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from ml.algorithms.device_cloud_inference.config import (DeviceCloudSDConfig, ServingConfig,
                                                         UShapedConfig)
from ml.algorithms.device_cloud_inference.devices import CloudOnlyDevice, DraftingDevice, HATDevice
from ml.algorithms.device_cloud_inference.models import (adapter_for, check_cut,
                                                         draft_checkpoint_lm, draft_lm, llm_info,
                                                         served_llm, sized_draft_lm)
from ml.algorithms.device_cloud_inference.partition import USplit
from ml.algorithms.device_cloud_inference.protocols import (Context, Trace, cloud_only,
                                                            device_cloud_sd, hat)
from ml.algorithms.device_cloud_inference.serving import (Loaded, ServingPolicy, device_role,
                                                          serve, setup)
from ml.algorithms.device_cloud_inference.session import CloudMiddle
from ml.distributed.runtime import RoleProgram
from ml.models.pretraining import LM_SIZES


@dataclass(frozen=True)
class USplitPolicy:
    """HAT (``speculative``: adapter draft, parallel drafting, prompt chunking) or the plain
    U-shaped split (one hidden-state round trip per token, one chunk)."""

    speculative: bool
    exposed: frozenset[str] = HATDevice.exposed

    def load(self, config: UShapedConfig) -> Loaded:
        check_cut(config)
        if not self.speculative:
            split = USplit(served_llm(config).model, config.input_layers, config.output_layers)
            return Loaded((split, None), llm_info(config))
        split, adapter, ad_info = adapter_for(
            config.checkpoint, config.pretrain_steps, config.context_tokens,
            config.extend_steps, config.input_layers, config.output_layers,
            config.adapter_layers, config.distill_steps, config.device, config.lm_size)
        # The adapter's check measures the LLM on its own windows; keep the LLM's figure apart.
        models = {**{("adapter_check_" + k if k.startswith("llm_") else k): v
                     for k, v in ad_info.items() if k != "cached"}, **llm_info(config)}
        return Loaded((split, adapter), models)

    def device(self, config: UShapedConfig, parts: Any, prompt: list[int],
               generator: torch.Generator) -> HATDevice:
        split, adapter = parts
        window = config.draft_window if self.speculative else None
        return HATDevice(split, adapter, prompt, config.temperature, generator, window)

    def cloud(self, parts: Any) -> CloudMiddle:
        return CloudMiddle(parts[0])

    def process(self, config: UShapedConfig, parts: Any, cloud: CloudMiddle, ctx: Context,
                trace: Trace):
        if not self.speculative:
            return hat(ctx, cloud, trace, 0, config.prompt_tokens, False, False)
        return hat(ctx, cloud, trace, config.gamma, config.chunk_size,
                   config.parallel_drafting, True, config.draft_window)


@dataclass(frozen=True)
class CloudOnlyPolicy:
    """Cloud-only inference: the whole LLM in the cloud."""

    exposed: frozenset[str] = CloudOnlyDevice.exposed

    def load(self, config: ServingConfig) -> Loaded:
        return Loaded(served_llm(config).model, llm_info(config))

    def device(self, config: ServingConfig, parts: Any, prompt: list[int],
               generator: torch.Generator) -> CloudOnlyDevice:
        return CloudOnlyDevice(prompt)

    def cloud(self, parts: Any) -> None:
        return None

    def process(self, config: ServingConfig, parts: Any, cloud: None, ctx: Context,
                trace: Trace):
        return cloud_only(ctx, parts, trace)


@dataclass(frozen=True)
class DeviceCloudSDPolicy:
    """Device-cloud speculative decoding with a separate draft LM on the device."""

    exposed: frozenset[str] = DraftingDevice.exposed

    def load(self, config: DeviceCloudSDConfig) -> Loaded:
        model = served_llm(config).model
        if config.draft_checkpoint is not None:
            draft, info = draft_checkpoint_lm(config.draft_checkpoint, config.checkpoint,
                                              config.pretrain_steps, config.context_tokens,
                                              config.extend_steps, config.device)
        elif config.lm_size is not None:
            draft, info = sized_draft_lm(config.lm_size, config.draft_d_model
                                         or LM_SIZES[config.lm_size].config.d_model,
                                         config.draft_layers, config.draft_steps, config.device)
        else:
            draft, info = draft_lm(config.draft_d_model or 64, config.draft_layers,
                                   config.draft_steps, config.context_tokens,
                                   config.extend_steps, config.device)
        models = {**llm_info(config), "draft_val_perplexity": info["val_perplexity"],
                  "draft_params": info["params"]}
        return Loaded((model, draft), models, clock_draft=draft)

    def device(self, config: DeviceCloudSDConfig, parts: Any, prompt: list[int],
               generator: torch.Generator) -> DraftingDevice:
        return DraftingDevice(parts[1], prompt, config.temperature, generator)

    def cloud(self, parts: Any) -> None:
        return None

    def process(self, config: DeviceCloudSDConfig, parts: Any, cloud: None, ctx: Context,
                trace: Trace):
        return device_cloud_sd(ctx, parts[0], config.gamma, trace)


def program(policy: ServingPolicy) -> RoleProgram:
    """The role program of the serving loop under ``policy``."""
    return RoleProgram(setup=functools.partial(setup, policy), worker=device_role,
                       coordinate=serve, exposed=policy.exposed)


HAT = program(USplitPolicy(speculative=True))
U_SHAPED = program(USplitPolicy(speculative=False))
CLOUD_ONLY = program(CloudOnlyPolicy())
DEVICE_CLOUD_SD = program(DeviceCloudSDPolicy())
