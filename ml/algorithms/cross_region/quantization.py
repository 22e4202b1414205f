"""Low-bit quantisation of the exchanged pseudo-gradients (Streaming DiLoCo, papers.md §1.2 step 3).

The Streaming DiLoCo paper sends outer gradients in FP4 (E3M0) and accumulates in FP32. Ours [I]:
a symmetric uniform integer code with one fp32 scale per tensor (absmax / (2^(b−1) − 1), round to
nearest), 4 or 8 bits; each worker quantises its own contribution and the mean is taken over the
dequantised values in fp32. 32 bits means no quantisation. The traffic counts the packed bytes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

#: Bit widths accepted for exchanged pseudo-gradients; 32 sends plain fp32.
SUPPORTED_BITS = (4, 8, 32)
_SCALE_BYTES = 4


def quantize_dequantize(t: Tensor, bits: int) -> Tensor:
    """``t`` after a round trip through a ``bits``-bit per-tensor code (a copy)."""
    if bits == 32:
        return t.clone()
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    levels = 2 ** (bits - 1) - 1
    scale = t.abs().amax().float() / levels
    if scale == 0:
        return torch.zeros_like(t)
    q = torch.round(t.float() / scale).clamp_(-levels, levels)
    return (q * scale).to(t.dtype)


def payload_bytes(tensor_numels: Sequence[int], bits: int) -> int:
    """Bytes one worker sends for tensors of these sizes at ``bits`` per value (plus scales)."""
    if bits == 32:
        return 4 * sum(tensor_numels)
    return sum(math.ceil(n * bits / 8) + _SCALE_BYTES for n in tensor_numels)
