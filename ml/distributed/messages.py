"""The wire format of a distributed run: a JSON header and tensors, never pickles.

A message is sent as consecutive point-to-point transfers on one (sender, receiver) pair:

1. a prefix, ``int64[2] = (FORMAT_VERSION, header_nbytes)``;
2. the header, UTF-8 JSON as a ``uint8`` tensor: ``{"op": ..., ..., "tensors": [{"dtype",
   "shape"}, ...]}``;
3. the payload: the message's tensors, concatenated into one flat buffer per dtype (in the
   order each dtype first appears), so a model of many tensors costs one transfer, not many.

*Payload* bytes are the tensors' bytes (what the emulator counts as traffic); *framing* bytes
are the prefix and the header. Values that travel inside a header are encoded by
:func:`pack`: JSON scalars, lists, string-keyed dicts, tensors (replaced by ``{"$tensor": i}``)
and the dataclasses registered with :func:`wire_type` (``{"$type": name, "fields": {...}}``).
Anything else is refused on sending (:class:`ProtocolError`), and a receiver only builds
registered types and whitelisted dtypes.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import torch

from ml.distributed.errors import ProtocolError

FORMAT_VERSION = 1
PREFIX_BYTES = 16
#: The largest header a receiver accepts (a header carries scalars, never tensors).
MAX_HEADER_BYTES = 16 * 2**20

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

_TYPES: dict[str, type] = {}


def wire_type(cls: type) -> type:
    """Register dataclass ``cls`` as a value that may cross the wire (by its class name)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    existing = _TYPES.get(cls.__name__)
    if existing is not None and existing is not cls:
        raise ValueError(f"wire type {cls.__name__} registered twice")
    _TYPES[cls.__name__] = cls
    return cls


def pack(value: Any, tensors: list[torch.Tensor]) -> Any:
    """``value`` as JSON, its tensors appended to ``tensors`` and replaced by references."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError(f"cannot send the non-finite number {value}")
        return value
    if isinstance(value, torch.Tensor):
        if value.dtype not in _DTYPE_NAMES:
            raise ProtocolError(f"cannot send a tensor of dtype {value.dtype}")
        tensors.append(value)
        return {"$tensor": len(tensors) - 1}
    if isinstance(value, (list, tuple)):
        return [pack(v, tensors) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or k.startswith("$"):
                raise ProtocolError(f"dict keys must be strings not starting with $, got {k!r}")
            out[k] = pack(v, tensors)
        return out
    if dataclasses.is_dataclass(value) and _TYPES.get(type(value).__name__) is type(value):
        fields = {f.name: pack(getattr(value, f.name), tensors)
                  for f in dataclasses.fields(value)}
        return {"$type": type(value).__name__, "fields": fields}
    raise ProtocolError(f"cannot send a value of type {type(value).__name__} (JSON, tensors "
                        "and registered wire types only)")


def unpack(value: Any, tensors: list[torch.Tensor]) -> Any:
    """The inverse of :func:`pack`."""
    if isinstance(value, list):
        return [unpack(v, tensors) for v in value]
    if isinstance(value, dict):
        if "$tensor" in value:
            index = value["$tensor"]
            if isinstance(index, bool) or not isinstance(index, int) or not (
                    0 <= index < len(tensors)):
                raise ProtocolError(f"bad tensor reference {index!r}")
            return tensors[index]
        if "$type" in value:
            cls = _TYPES.get(value["$type"])
            if cls is None or not isinstance(value.get("fields"), dict):
                raise ProtocolError(f"unknown wire type {value['$type']!r}")
            fields = {k: unpack(v, tensors) for k, v in value["fields"].items()}
            try:
                return cls(**fields)
            except TypeError as exc:
                raise ProtocolError(f"bad fields for {value['$type']}: {exc}") from None
        return {k: unpack(v, tensors) for k, v in value.items()}
    return value


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"header holds the non-JSON constant {name}")


def encode_header(header: dict) -> torch.Tensor:
    """The header as UTF-8 JSON in a ``uint8`` tensor; ProtocolError for non-JSON values."""
    try:
        text = json.dumps(header, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"header is not plain JSON: {exc}") from None
    data = text.encode()
    if len(data) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(data)} bytes is over {MAX_HEADER_BYTES}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_header(data: torch.Tensor) -> dict:
    """Parse a received header; ProtocolError unless it is a JSON object."""
    try:
        header = json.loads(bytes(data.numpy()).decode(), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise ProtocolError("header must be a JSON object with a string 'op'")
    return header


def prefix(header_nbytes: int) -> torch.Tensor:
    return torch.tensor([FORMAT_VERSION, header_nbytes], dtype=torch.int64)


def header_size(prefix_tensor: torch.Tensor) -> int:
    """The header length a received prefix announces (checked)."""
    version, nbytes = (int(v) for v in prefix_tensor.tolist())
    if version != FORMAT_VERSION:
        raise ProtocolError(f"wire format {version}, expected {FORMAT_VERSION}")
    if not 0 < nbytes <= MAX_HEADER_BYTES:
        raise ProtocolError(f"header length {nbytes} out of range")
    return nbytes


def tensor_specs(tensors: list[torch.Tensor]) -> list[dict]:
    return [{"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape)} for t in tensors]


def flatten(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """One contiguous flat buffer per dtype, dtypes in order of first appearance; empty
    buffers are left out (nothing to send)."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t.detach().reshape(-1))
    flats = []
    for parts in groups.values():
        flat = torch.cat([p.to(device) for p in parts]) if len(parts) > 1 else \
            parts[0].to(device).clone()
        if flat.numel():
            flats.append(flat)
    return flats


def buffers_for(specs: list[dict], device: torch.device) -> tuple[list[torch.Tensor], list]:
    """Empty receive buffers for the payload described by ``specs``, and a plan to split them
    (checked: known dtypes, non-negative shapes)."""
    sizes: dict[torch.dtype, int] = {}
    plan = []
    for spec in specs:
        if not isinstance(spec, dict) or spec.get("dtype") not in DTYPES:
            raise ProtocolError(f"bad tensor spec {spec!r}")
        shape = spec.get("shape")
        if not isinstance(shape, list) or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in shape):
            raise ProtocolError(f"bad tensor shape {shape!r}")
        dtype = DTYPES[spec["dtype"]]
        numel = math.prod(shape)
        plan.append((dtype, sizes.get(dtype, 0), numel, shape))
        sizes[dtype] = sizes.get(dtype, 0) + numel
    buffers = {dtype: torch.empty(n, dtype=dtype, device=device) for dtype, n in sizes.items()}
    order = [d for d in buffers if sizes[d]]
    return [buffers[d] for d in order], [(buffers[d], start, n, shape)
                                         for d, start, n, shape in plan]


def split(plan: list) -> list[torch.Tensor]:
    """The tensors of a received payload, as views into its flat buffers."""
    return [flat[start:start + n].view(shape) for flat, start, n, shape in plan]


def payload_bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
