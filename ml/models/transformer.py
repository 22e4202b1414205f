"""A small Llama-style decoder-only language model shared by the LLM methods.

Pre-norm blocks (RMSNorm), multi-head causal attention with separate q/k/v/o projections and
rotary (or learned) positions, a SwiGLU MLP, no biases: the layer names of Llama, so pruning
(COMP, FedSpine), LoRA (FedSpine), fragments (DiLoCo, CoCoDC) and U-shaped cuts (HAT) address
the same parts a Llama checkpoint has.

Pruning-friendly by construction: every block reads its sizes from its weights, never from the
config, so a block keeps working after heads (q/k/v rows, o columns) or MLP channels
(gate/up rows, down columns) are removed with :meth:`Attention.prune_heads` /
:meth:`SwiGLU.prune_channels`, and the model keeps working after whole blocks are removed from
``blocks``. :meth:`DecoderLM.architecture` records the shrunk shapes so a pruned model can be
rebuilt with :meth:`DecoderLM.from_architecture` (see ml.models.checkpoints).

KV cache: a list with one ``(k, v)`` pair per block, each ``[batch, heads, tokens, head_dim]``
with rotary positions already applied; :func:`truncate_cache` rolls it back to an accepted prefix
(speculative decoding).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

#: One block's cache entry ``(k, v)``, and the whole model's cache (one entry per block).
KV = tuple[torch.Tensor, torch.Tensor]
Cache = list[KV]


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of a :class:`DecoderLM`. Pruning shrinks the weights, never this config."""

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 384
    max_seq_len: int = 256
    positional: Literal["rope", "learned"] = "rope"
    dropout: float = 0.0
    tie_embeddings: bool = False
    rope_base: float = 10000.0

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.positional == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError("rotary positions need an even head_dim")
        if self.positional not in ("rope", "learned"):
            raise ValueError(f"positional must be 'rope' or 'learned', got {self.positional!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DecoderConfig:
        return cls(**values)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _uninitialised_linear(d_in: int, d_out: int, **kwargs) -> nn.Linear:
    """A Linear whose weights the caller sets; quiet when zero-sized (everything pruned)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.utils.skip_init(nn.Linear, d_in, d_out, **kwargs)


def _linear(d_in: int, d_out: int) -> nn.Linear:
    """A bias-free Linear (DecoderLM re-initialises all weights)."""
    if d_in * d_out == 0:
        return _uninitialised_linear(d_in, d_out, bias=False)
    return nn.Linear(d_in, d_out, bias=False)


def _select_linear(linear: nn.Module, out_idx: torch.Tensor | None = None,
                   in_idx: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear keeping rows ``out_idx`` and columns ``in_idx`` of ``linear``'s weight."""
    if type(linear) is not nn.Linear:
        raise TypeError(f"can only prune plain nn.Linear layers, got {type(linear).__name__}; "
                        "merge and remove LoRA first (ml.models.lora.remove_lora)")
    weight = linear.weight.detach()
    if out_idx is not None:
        weight = weight[out_idx]
    if in_idx is not None:
        weight = weight[:, in_idx]
    new = _uninitialised_linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                                device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach() if out_idx is None else linear.bias.detach()[out_idx])
    return new


class Attention(nn.Module):
    """Causal multi-head self-attention; ``n_heads`` is read from ``q_proj``'s weight."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.head_dim = head_dim
        self.dropout = dropout
        self.q_proj = _linear(d_model, n_heads * head_dim)
        self.k_proj = _linear(d_model, n_heads * head_dim)
        self.v_proj = _linear(d_model, n_heads * head_dim)
        self.o_proj = _linear(n_heads * head_dim, d_model)

    @property
    def n_heads(self) -> int:
        return self.q_proj.out_features // self.head_dim

    def prune_heads(self, keep: Sequence[int]) -> None:
        """Keep only heads ``keep`` (q/k/v rows and o columns of the other heads are removed)."""
        keep = sorted(set(int(h) for h in keep))
        if any(not 0 <= h < self.n_heads for h in keep):
            raise ValueError(f"head indices must be in [0, {self.n_heads}), got {keep}")
        idx = torch.tensor([h * self.head_dim + d for h in keep for d in range(self.head_dim)],
                           dtype=torch.long)
        self.q_proj = _select_linear(self.q_proj, out_idx=idx)
        self.k_proj = _select_linear(self.k_proj, out_idx=idx)
        self.v_proj = _select_linear(self.v_proj, out_idx=idx)
        self.o_proj = _select_linear(self.o_proj, in_idx=idx)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                past: KV | None = None) -> tuple[torch.Tensor, KV]:
        batch, tokens, _ = x.shape
        heads, dim = self.n_heads, self.head_dim
        q = self.q_proj(x).view(batch, tokens, heads, dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, tokens, heads, dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, tokens, heads, dim).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        past_len = 0
        if past is not None:
            past_len = past[0].shape[2]
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        if heads == 0:  # every head pruned: the block's attention contributes nothing
            return torch.zeros_like(x), (k, v)
        dropout = self.dropout if self.training else 0.0
        if past_len == 0:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif tokens == 1:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:  # new tokens see the whole past and the new tokens up to themselves
            allowed = torch.ones(tokens, past_len + tokens, dtype=torch.bool, device=x.device)
            allowed = allowed.tril(diagonal=past_len)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, tokens, heads * dim)
        return self.o_proj(out), (k, v)


class SwiGLU(nn.Module):
    """Llama's MLP: ``down(silu(gate(x)) * up(x))``; the width is read from ``gate_proj``."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = _linear(d_model, d_ff)
        self.up_proj = _linear(d_model, d_ff)
        self.down_proj = _linear(d_ff, d_model)

    @property
    def d_ff(self) -> int:
        return self.gate_proj.out_features

    def prune_channels(self, keep: Sequence[int]) -> None:
        """Keep only intermediate channels ``keep`` (gate/up rows, down columns)."""
        keep = sorted(set(int(c) for c in keep))
        if any(not 0 <= c < self.d_ff for c in keep):
            raise ValueError(f"channel indices must be in [0, {self.d_ff}), got {keep}")
        idx = torch.tensor(keep, dtype=torch.long)
        self.gate_proj = _select_linear(self.gate_proj, out_idx=idx)
        self.up_proj = _select_linear(self.up_proj, out_idx=idx)
        self.down_proj = _select_linear(self.down_proj, in_idx=idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.d_ff == 0:
            return torch.zeros_like(x)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderBlock(nn.Module):
    """Pre-norm block: ``h + attn(attn_norm(h))``, then ``h + mlp(mlp_norm(h))``."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.attn_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.attn = Attention(d_model, n_heads, head_dim, dropout)
        self.mlp_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.mlp = SwiGLU(d_model, d_ff)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                past: KV | None = None) -> tuple[torch.Tensor, KV]:
        attn_out, present = self.attn(self.attn_norm(h), rope, past)
        h = h + self.resid_dropout(attn_out)
        h = h + self.resid_dropout(self.mlp(self.mlp_norm(h)))
        return h, present


class DecoderLM(nn.Module):
    """Decoder-only LM: ``embed`` (+ ``pos``), ``blocks``, final ``norm`` and ``head``.

    ``forward(idx, past_key_values, use_cache) -> (logits, present)``. The piecewise helpers
    :meth:`embed_tokens`, :meth:`forward_blocks` and :meth:`logits_from_hidden` run parts of the
    model, so it can be cut into input/middle/output submodels or fragments.
    """

    def __init__(self, cfg: DecoderConfig, block_shapes: Sequence[dict] | None = None):
        super().__init__()
        self.cfg = cfg
        self.head_dim = cfg.head_dim
        shapes = block_shapes or [{"n_heads": cfg.n_heads, "d_ff": cfg.d_ff}] * cfg.n_layers
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.positional == "learned":
            self.pos = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(cfg.d_model, s["n_heads"], self.head_dim, s["d_ff"], cfg.dropout)
            for s in shapes)
        self.norm = nn.RMSNorm(cfg.d_model, eps=1e-6)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.positional == "rope":
            inv_freq = 1.0 / cfg.rope_base ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim)
            self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._init_weights()
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def _init_weights(self) -> None:
        # GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers).
        resid_std = 0.02 / math.sqrt(2 * max(1, len(self.blocks)))
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight.numel():
                std = resid_std if name.endswith(("o_proj", "down_proj")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)

    # --- architecture -----------------------------------------------------------------------
    def architecture(self) -> dict:
        """The config plus each block's current (possibly pruned) shape; JSON-able."""
        return {"config": self.cfg.to_dict(),
                "blocks": [{"n_heads": b.attn.n_heads, "d_ff": b.mlp.d_ff} for b in self.blocks]}

    @classmethod
    def from_architecture(cls, arch: dict) -> DecoderLM:
        """An (untrained) model with the shapes recorded by :meth:`architecture`."""
        return cls(DecoderConfig.from_dict(arch["config"]), block_shapes=arch["blocks"])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- piecewise forward ------------------------------------------------------------------
    def embed_tokens(self, idx: torch.Tensor, pos_offset: int = 0) -> torch.Tensor:
        """Hidden states ``[B, T, d_model]`` of token ids ``idx`` at positions pos_offset.."""
        h = self.embed(idx)
        if self.cfg.positional == "learned":
            end = pos_offset + idx.shape[1]
            if end > self.cfg.max_seq_len:
                raise ValueError(f"position {end - 1} exceeds max_seq_len {self.cfg.max_seq_len}")
            h = h + self.pos(torch.arange(pos_offset, end, device=idx.device))
        return self.drop(h)

    def rotary(self, tokens: int, pos_offset: int, device=None, dtype=None):
        """``(cos, sin)`` for positions ``pos_offset..pos_offset+tokens`` (None if learned)."""
        if self.cfg.positional != "rope":
            return None
        pos = torch.arange(pos_offset, pos_offset + tokens, device=device or self.inv_freq.device,
                           dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.to(pos.device))
        emb = torch.cat([freqs, freqs], dim=-1)
        dtype = dtype or self.embed.weight.dtype
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward_blocks(self, h: torch.Tensor, start: int = 0, end: int | None = None,
                       past: Cache | None = None, use_cache: bool = False,
                       pos_offset: int | None = None) -> tuple[torch.Tensor, Cache | None]:
        """Run ``blocks[start:end]`` on hidden states ``h``.

        ``past`` holds one cache entry per block of the range. ``pos_offset`` is the position of
        ``h``'s first token; by default the cached length (0 without a cache). Returns the new
        hidden states and, with ``use_cache``, the updated cache of the range.
        """
        end = len(self.blocks) if end is None else end
        if not 0 <= start <= end <= len(self.blocks):
            raise ValueError(f"block range [{start}, {end}) outside 0..{len(self.blocks)}")
        if past is not None and len(past) != end - start:
            raise ValueError(f"past has {len(past)} entries for {end - start} blocks")
        if pos_offset is None:
            pos_offset = cache_length(past)
        rope = self.rotary(h.shape[1], pos_offset, h.device, h.dtype)
        present: Cache = []
        for i, block in enumerate(self.blocks[start:end]):
            h, kv = block(h, rope, None if past is None else past[i])
            present.append(kv)
        return h, (present if use_cache else None)

    def logits_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``[B, T, vocab]`` from the last block's hidden states."""
        return self.head(self.norm(h))

    def forward(self, idx: torch.Tensor, past_key_values: Cache | None = None,
                use_cache: bool = False) -> tuple[torch.Tensor, Cache | None]:
        pos_offset = cache_length(past_key_values)
        h = self.embed_tokens(idx, pos_offset)
        h, present = self.forward_blocks(h, 0, len(self.blocks), past_key_values, use_cache,
                                         pos_offset)
        return self.logits_from_hidden(h), present

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Extend ``idx`` [B, T] by ``max_new_tokens`` tokens (greedy when temperature is 0)."""
        logits, past = self(idx, use_cache=True)
        out = [idx]
        for _ in range(max_new_tokens):
            last = logits[:, -1]
            if temperature > 0:
                probs = F.softmax(last / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            else:
                nxt = last.argmax(dim=-1, keepdim=True)
            out.append(nxt)
            logits, past = self(nxt, past_key_values=past, use_cache=True)
        return torch.cat(out, dim=1)


def cache_length(past: Cache | None) -> int:
    """Number of positions held in a cache (0 for ``None`` or an empty list)."""
    return past[0][0].shape[2] if past else 0


def truncate_cache(past: Cache, length: int) -> Cache:
    """The cache rolled back to its first ``length`` positions (e.g. the accepted prefix)."""
    if not 0 <= length <= cache_length(past):
        raise ValueError(f"cannot truncate a cache of {cache_length(past)} positions to {length}")
    return [(k[:, :, :length], v[:, :, :length]) for k, v in past]


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``logits`` [B, T, V] against ``targets`` [B, T]."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
