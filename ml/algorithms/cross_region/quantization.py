"""Low-bit quantisation of the exchanged pseudo-gradients (Streaming DiLoCo, arXiv 2501.18512).

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
    return decode(encode(t, bits), bits, t)


def encode(t: Tensor, bits: int) -> list[Tensor]:
    """The wire form of ``t`` at ``bits`` < 32: its codes packed into ``uint8`` (two 4-bit
    codes a byte) and its fp32 scale, ``payload_bytes`` bytes in all."""
    if bits not in SUPPORTED_BITS or bits == 32:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS[:-1]}, got {bits}")
    levels = 2 ** (bits - 1) - 1
    scale = t.abs().amax().float() / levels
    if scale == 0:
        codes = torch.zeros(t.numel(), dtype=torch.int16, device=t.device)
    else:
        codes = torch.round(t.float() / scale).clamp_(-levels, levels).flatten().to(torch.int16)
    offset = (codes + levels).to(torch.uint8)  # 0 .. 2·levels
    if bits == 4:
        if offset.numel() % 2:
            offset = torch.cat([offset, offset.new_zeros(1)])
        offset = offset[0::2] | (offset[1::2] << 4)
    return [offset, scale.reshape(1)]


def decode(wire: list[Tensor], bits: int, like: Tensor) -> Tensor:
    """The values that :func:`encode` gave ``wire`` for, shaped and typed like ``like``."""
    packed, scale = wire
    levels = 2 ** (bits - 1) - 1
    if bits == 4:
        packed = torch.stack([packed & 0x0F, packed >> 4], dim=1).flatten()
    codes = packed[:like.numel()].to(torch.float32) - levels
    scale = scale.reshape(())
    if scale == 0:
        return torch.zeros_like(like)
    return (codes.reshape(like.shape) * scale).to(like.dtype)


def payload_bytes(tensor_numels: Sequence[int], bits: int) -> int:
    """Bytes one worker sends for tensors of these sizes at ``bits`` per value (plus scales)."""
    if bits == 32:
        return 4 * sum(tensor_numels)
    return sum(math.ceil(n * bits / 8) + _SCALE_BYTES for n in tensor_numels)


class QuantizedCodec:
    """The wire form of pseudo-gradients at ``bits`` < 32 (ml.distributed.collectives.Codec)."""

    def __init__(self, bits: int):
        self.bits = bits

    def encode(self, t: Tensor) -> list[Tensor]:
        return encode(t, self.bits)

    def decode(self, wire: list[Tensor], like: Tensor) -> Tensor:
        return decode(wire, self.bits, like)
