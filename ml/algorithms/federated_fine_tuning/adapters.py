"""Global LoRA adapters on the server, and client slices of them at any rank and structure.

The server keeps every adapter at the largest rank R and the *unpruned* shapes. A client with
rank r and structure S gets ``A[:r]`` and ``B[:, :r]`` (HetLoRA's truncation), restricted to the
rows/columns of the heads and channels it keeps: q/k/v and gate/up adapters lose rows of B,
o and down adapters lose columns of A. :func:`scatter_state` puts a client's tensors back in
the global index space with a mask of the entries it holds.

Aggregators (``add`` clients, then ``result(previous_global)``):

- :class:`EntryMeanAggregator` (FedSpine, ours): every entry is the sample-weighted mean over
  the clients that hold it; entries nobody holds keep their previous value. Where all clients
  share rank and structure this is exactly FedAvg of the factors.
- :class:`ZeroPadAggregator` (HetLoRA, Cho et al. 2024): factors zero-padded to rank R and
  averaged with weights proportional to ``n_k * ||B_k A_k||_F`` (sparsity-weighted).
"""
from __future__ import annotations

import re

import torch

from ml.algorithms.federated_fine_tuning.structure import Structure

LoRAState = dict[str, torch.Tensor]
_NAME = re.compile(r"blocks\.(\d+)\.(attn|mlp)\.(\w+)\.lora_([AB])$")


def _kept_index(key: str, structure: Structure, head_dim: int) -> tuple[int, int, torch.Tensor] | None:
    """``(block, axis, indices)``: which axis of this factor the structure restricts, or None."""
    m = _NAME.search(key)
    if m is None:
        raise KeyError(f"not a decoder LoRA key: {key}")
    block, proj, factor = int(m.group(1)), m.group(3), m.group(4)
    if proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        idx = [h * head_dim + d for h in structure.heads[block] for d in range(head_dim)]
    else:
        idx = list(structure.channels[block])
    idx_t = torch.tensor(idx, dtype=torch.long)
    if proj in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"):
        return (block, 0, idx_t) if factor == "B" else None  # output rows live in B
    return (block, 1, idx_t) if factor == "A" else None  # input columns (o, down) live in A


def slice_state(global_state: LoRAState, structure: Structure, rank: int,
                head_dim: int) -> LoRAState:
    """The client's adapters: rank-``rank`` truncation restricted to ``structure``."""
    out = {}
    for key, t in global_state.items():
        t = t[:rank] if key.endswith("lora_A") else t[:, :rank]
        kept = _kept_index(key, structure, head_dim)
        if kept is not None:
            t = t.index_select(kept[1], kept[2])
        out[key] = t.clone()
    return out


def scatter_state(client_state: LoRAState, structure: Structure, rank: int, head_dim: int,
                  like: LoRAState) -> tuple[LoRAState, dict[str, torch.Tensor]]:
    """Client tensors placed in the global shapes of ``like``, zero elsewhere, and the boolean
    masks of the entries the client holds."""
    full, masks = {}, {}
    for key, ref in like.items():
        t, mask = torch.zeros_like(ref), torch.zeros_like(ref, dtype=torch.bool)
        rows = slice(0, rank) if key.endswith("lora_A") else slice(None)
        cols = slice(None) if key.endswith("lora_A") else slice(0, rank)
        kept = _kept_index(key, structure, head_dim)
        src = client_state[key]
        if kept is None:
            t[rows, cols] = src
            mask[rows, cols] = True
        elif kept[1] == 0:  # rows restricted (B of q/k/v/gate/up)
            t[kept[2], cols] = src
            mask[kept[2], cols] = True
        else:  # columns restricted (A of o/down); t[rows, :] is a view, written through
            t[rows, :][:, kept[2]] = src
            mask[rows, :][:, kept[2]] = True
        full[key], masks[key] = t, mask
    return full, masks


def update_norm(client_state: LoRAState, scaling: float) -> float:
    """``||ΔW||_F`` summed over layers, ΔW = scaling * B @ A (the client's whole update)."""
    total = 0.0
    for key, a in client_state.items():
        if key.endswith("lora_A"):
            b = client_state[key[:-1] + "B"]
            total += float(torch.linalg.matrix_norm(scaling * (b @ a)))
    return total


class EntryMeanAggregator:
    """Per-entry weighted mean over the clients holding each entry (FedSpine's, ours)."""

    def __init__(self, like: LoRAState):
        self._sum = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in like.items()}
        self._weight = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in like.items()}

    def add(self, full: LoRAState, masks: dict[str, torch.Tensor], weight: float) -> None:
        for key in self._sum:
            m = masks[key].double()
            self._sum[key] += weight * m * full[key].double()
            self._weight[key] += weight * m

    def result(self, previous: LoRAState) -> LoRAState:
        return {k: torch.where(self._weight[k] > 0, self._sum[k] / self._weight[k].clamp_min(1e-300),
                               previous[k].double()).to(previous[k].dtype)
                for k in previous}


class ZeroPadAggregator(EntryMeanAggregator):
    """HetLoRA: zero-padded factors, weights ``n_k * ||ΔW_k||``. Rows and columns a client has
    pruned count as not held; missing rank components count as zeros (the padding)."""

    def add(self, full: LoRAState, masks: dict[str, torch.Tensor], weight: float) -> None:
        for key in self._sum:
            m = masks[key]
            # Padding: a structure entry the client holds at any rank counts for every rank.
            held = m.any(dim=0, keepdim=True) if key.endswith("lora_A") else m.any(dim=1, keepdim=True)
            held = held.expand_as(m).double()
            self._sum[key] += weight * held * full[key].double()
            self._weight[key] += weight * held
