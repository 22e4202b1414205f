"""What the emulated clock charges: FLOPs and bytes of each forward pass, turned into seconds.

The real forward passes run on the small pre-trained decoder (they decide every token); the clock
charges the work a *served model* of another size would do for the same passes (ours [I], the
stand-in scale that DiLoCo's emulation uses too): ``pretrained`` charges the real model's own
shape (fp32), ``llama2-7b`` a Llama-2-7B-shaped model in fp16, the kind of LLM HAT serves, with
the real cut's layer counts (1 + 30 + 1 for a 1/1 cut), and ``llama2-7b-proportional`` the same
7B shape with every part charged at the real model's *share* of its depth (ours): with a 12-block
served LM cut 1 + 10 + 1 and a one-block adapter, the input, output and adapter are each charged
32/12 = 2.67 of the 7B's layers and the middle 26.67, so the adapter stands in for the same share
of layers the clock charges (the 4-block LM made it stand in for half the model while the clock
charged 1 of 32 layers). A pass
over ``n`` new tokens after ``c`` cached positions costs per decoder layer

    2·n·(d·d_q + 2·d·d_kv + d_q·d) + 3·2·n·d·d_ff      (projections and SwiGLU MLP)
  + 4·n·(c + n)·d_q                                      (attention scores and values)

FLOPs, plus ``2·n·d·V`` for the LM head on the positions whose logits are needed. The linear
part equals what ``torch.utils.flop_counter`` counts on the real model (tested); the attention
term is added because the counter does not see the fused attention kernel.

Roofline (ours [I]): a pass takes ``max(FLOPs / rate, bytes read / memory bandwidth)`` seconds,
where the bytes are the weights the pass touches (once per pass, whatever the batch) and the KV
cache it attends over. The floor is why batching many devices' requests on the cloud pays off and
why a chunk has a fixed cost. Device profiles carry no memory bandwidth, so :data:`MEMORY_GBPS`
holds the datasheet figures of the catalogue's profiles (ours); an unknown profile gets no floor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ml.models.transformer import DecoderLM
from ml.testbed import EmulatedDevice

#: Memory bandwidth (GB/s) of the catalogue profiles, from the vendors' datasheets (ours [I]).
#: The 8-GPU A6000 server runs its model tensor-parallel, so its eight memories read in parallel.
MEMORY_GBPS: dict[str, float] = {
    "jetson-tx2": 59.7,
    "jetson-nx": 59.7,
    "jetson-agx-orin": 204.8,
    "jetson-orin-nano": 68.0,
    "a6000-server": 8 * 768.0,
    "h100": 3350.0,
}

ServedModel = Literal["pretrained", "llama2-7b", "llama2-7b-proportional"]


@dataclass(frozen=True)
class LMShape:
    """Sizes of a decoder-only LM that the clock charges for (not necessarily the real one)."""

    name: str
    n_layers: int
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    bytes_per_value: int  # weights, KV cache and hidden states on the wire

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_q(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def d_kv(self) -> int:
        return self.n_kv_heads * self.head_dim

    def layer_linear_flops(self, tokens: int) -> float:
        """FLOPs of one layer's projections and MLP on ``tokens`` tokens."""
        d = self.d_model
        return 2.0 * tokens * (2 * d * self.d_q + 2 * d * self.d_kv + 3 * d * self.d_ff)

    def layer_flops(self, tokens: int, context: int) -> float:
        """FLOPs of one layer on ``tokens`` new tokens after ``context`` cached positions."""
        return self.layer_linear_flops(tokens) + 4.0 * tokens * (context + tokens) * self.d_q

    def head_flops(self, tokens: int) -> float:
        return 2.0 * tokens * self.d_model * self.vocab_size

    def layer_weight_bytes(self) -> float:
        d = self.d_model
        return float(self.bytes_per_value * (2 * d * self.d_q + 2 * d * self.d_kv
                                             + 3 * d * self.d_ff))

    def head_weight_bytes(self) -> float:
        return float(self.bytes_per_value * self.d_model * self.vocab_size)

    def kv_bytes(self, positions: int) -> float:
        """Bytes of one layer's K and V cache over ``positions`` positions."""
        return float(2 * positions * self.d_kv * self.bytes_per_value)

    def hidden_bytes(self, tokens: int) -> int:
        """Bytes of ``tokens`` hidden states on the wire."""
        return tokens * self.d_model * self.bytes_per_value


def shape_of(model: DecoderLM, name: str = "pretrained", bytes_per_value: int = 4) -> LMShape:
    """The shape of a real (unpruned) :class:`DecoderLM`, fp32 by default."""
    cfg = model.cfg
    return LMShape(name, len(model.blocks), cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_heads,
                   cfg.vocab_size, bytes_per_value)


#: Named stand-ins: Llama-2-7B, and the 68M-parameter Llama that device-cloud speculative
#: decoding commonly drafts with (JackFram/llama-68m), both fp16.
LLAMA2_7B = LMShape("llama2-7b", 32, 4096, 11008, 32, 32, 32000, 2)
LLAMA_68M = LMShape("llama-68m", 2, 768, 3072, 12, 12, 32000, 2)


@dataclass(frozen=True)
class Pass:
    """One forward pass of ``layers`` decoder layers of ``shape`` (one request's share)."""

    shape: LMShape
    layers: float  # fractional under a proportional clock
    tokens: int
    context: int
    head_tokens: int = 0

    @property
    def flops(self) -> float:
        return (self.layers * self.shape.layer_flops(self.tokens, self.context)
                + self.shape.head_flops(self.head_tokens))

    @property
    def kv_read_bytes(self) -> float:
        return self.layers * self.shape.kv_bytes(self.context + self.tokens)

    @property
    def weight_bytes(self) -> float:
        head = self.shape.head_weight_bytes() if self.head_tokens else 0.0
        return self.layers * self.shape.layer_weight_bytes() + head


def memory_gbps(device: EmulatedDevice) -> float | None:
    return MEMORY_GBPS.get(device.profile.name)


def batch_seconds(device: EmulatedDevice, passes: list[Pass], memory_bound: bool = True,
                  share: float = 1.0) -> float:
    """Seconds ``device`` needs to run ``passes`` as one batch (roofline, weights read once).

    The passes of one batch run the same layers, so their weights are read once: the largest
    weight footprint among them counts, plus every pass's own KV cache. ``share`` is the
    fraction of the device's compute and memory bandwidth the passes get (a cloud shared with
    other tenants: ``cloud_share``); the time scales by ``1 / share``.
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    if not passes:
        return 0.0
    flops = sum(p.flops for p in passes)
    seconds = flops / (device.profile.compute_gflops * 1e9)
    bandwidth = memory_gbps(device)
    if memory_bound and bandwidth:
        read = max(p.weight_bytes for p in passes) + sum(p.kv_read_bytes for p in passes)
        seconds = max(seconds, read / (bandwidth * 1e9))
    return seconds / share


def pass_seconds(device: EmulatedDevice, p: Pass, memory_bound: bool = True) -> float:
    """Seconds ``device`` needs for the single pass ``p``."""
    return batch_seconds(device, [p], memory_bound)


Part = Literal["input", "middle", "output", "adapter", "full", "draft-lm"]


@dataclass(frozen=True)
class Op:
    """One real forward pass a session ran: which part, on how many tokens, after how many."""

    part: Part
    tokens: int
    context: int
    head_tokens: int = 0


@dataclass(frozen=True)
class ServedModels:
    """The shapes the clock charges for, and how HAT cuts the served LLM.

    The device holds the first ``input_layers`` and the last ``output_layers`` layers of the
    served LLM (the same counts as the real model's cut) and an adapter of ``adapter_layers``
    layers of the LLM's width; device-cloud speculative decoding drafts with ``draft_lm``.
    """

    llm: LMShape
    draft_lm: LMShape | None
    input_layers: float
    output_layers: float
    adapter_layers: float = 1

    @property
    def middle_layers(self) -> float:
        return self.llm.n_layers - self.input_layers - self.output_layers

    def charge(self, op: Op) -> Pass:
        """The pass of the served model that stands for the real pass ``op``."""
        layers = {"input": self.input_layers, "middle": self.middle_layers,
                  "output": self.output_layers, "adapter": self.adapter_layers,
                  "full": self.llm.n_layers}
        if op.part == "draft-lm":
            if self.draft_lm is None:
                raise ValueError("no draft LM shape was given for device-cloud speculative "
                                 "decoding")
            return Pass(self.draft_lm, self.draft_lm.n_layers, op.tokens, op.context,
                        op.head_tokens)
        return Pass(self.llm, layers[op.part], op.tokens, op.context, op.head_tokens)


def served_models(name: ServedModel, llm: DecoderLM, draft_lm: DecoderLM | None,
                  input_layers: int, output_layers: int, adapter_layers: int = 1
                  ) -> ServedModels:
    """The stand-in ``name`` for the real ``llm`` cut after ``input_layers`` and before the
    last ``output_layers`` layers, with an adapter of ``adapter_layers`` blocks (``draft_lm``:
    device-cloud SD's real draft model)."""
    if name == "llama2-7b":
        return ServedModels(LLAMA2_7B, LLAMA_68M, input_layers, output_layers, adapter_layers)
    if name == "llama2-7b-proportional":
        share = LLAMA2_7B.n_layers / len(llm.blocks)
        return ServedModels(LLAMA2_7B, LLAMA_68M, input_layers * share, output_layers * share,
                            adapter_layers * share)
    real_draft = shape_of(draft_lm, "pretrained-draft") if draft_lm is not None else None
    return ServedModels(shape_of(llm), real_draft, input_layers, output_layers, adapter_layers)
