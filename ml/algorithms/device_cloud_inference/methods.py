"""HAT and its baselines in the catalogue: one entry per method, each a policy of the serving
loop (:mod:`.roles`) that runs emulated or distributed."""
from __future__ import annotations

import functools

from ml.algorithms.device_cloud_inference import roles
from ml.algorithms.device_cloud_inference.config import (DeviceCloudSDConfig, HATConfig,
                                                         ServingConfig, UShapedConfig)
from ml.distributed.run import run_emulated
from ml.registry import Method, register

METRICS = ("ttft_ms", "tbt_ms", "acceptance_rate", "tokens_per_round", "uplink_bytes_per_token",
           "downlink_bytes_per_token", "prefill_uplink_bytes", "traffic_bytes", "sim_time_s",
           "ttft_ms/<device>", "tbt_ms/<device>", "wall_ttft_ms", "wall_tbt_ms",
           "measured_traffic_bytes")
PAPER = ("Xie, Xu, Xu, Liao, Yao (USTC), HAT, arXiv 2503.18989: U-shaped device-cloud "
         "inference with speculative decoding and prompt chunking")

BASELINES = ("cloud-only-inference", "u-shaped-inference", "device-cloud-sd")

CLOUD_ONLY = register(Method(
    name="cloud-only-inference", paper=PAPER,
    summary="Baseline of HAT: the device sends its prompt's tokens, the cloud runs the whole LLM "
            "(batched across devices) and streams the tokens back.",
    config=ServingConfig, run=functools.partial(run_emulated, roles.CLOUD_ONLY),
    program=roles.CLOUD_ONLY, metrics=METRICS, family="device-cloud-inference"))

U_SHAPED = register(Method(
    name="u-shaped-inference", paper=PAPER,
    summary="Baseline of HAT: U-shaped split (first and last layers on the device, the middle in "
            "the cloud), one hidden-state round trip per token, no speculation, no chunking.",
    config=UShapedConfig, run=functools.partial(run_emulated, roles.U_SHAPED),
    program=roles.U_SHAPED, metrics=METRICS, family="device-cloud-inference"))

DEVICE_CLOUD_SD = register(Method(
    name="device-cloud-sd", paper=PAPER,
    summary="Baseline of HAT: a separate small draft LM on the device drafts gamma tokens and "
            "sends the raw tokens; the cloud verifies them with the whole LLM.",
    config=DeviceCloudSDConfig, run=functools.partial(run_emulated, roles.DEVICE_CLOUD_SD),
    program=roles.DEVICE_CLOUD_SD, metrics=METRICS,
    family="device-cloud-inference"))

HAT = register(Method(
    name="hat", paper=PAPER,
    summary="U-shaped device-cloud inference: input and output submodels plus a distilled "
            "adapter draft on the device, the middle verifies in the cloud from hidden states "
            "(never tokens); parallel drafting and pipelined prompt chunking sized per device.",
    config=HATConfig, run=functools.partial(run_emulated, roles.HAT),
    program=roles.HAT, baselines=BASELINES, metrics=METRICS,
    family="device-cloud-inference"))
