"""Which attention heads and FFN channels a client keeps, and the pruned model it trains.

Dependency groups (FedSpine, arXiv 2501.02438): a head is the q/k/v rows and the o columns of
that head; an FFN channel is the gate/up rows and the down column of that channel (SwiGLU). A
:class:`Structure` lists the kept indices per block, in the *original* numbering, so adapters and
importance scores of differently pruned clients line up on the server.

:func:`build_client_model` really removes the pruned rows and columns (``Attention.prune_heads``,
``SwiGLU.prune_channels``), so a pruned model has fewer parameters and FLOPs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ml.algorithms.federated_fine_tuning.task import TopicClassifier
from ml.distributed.messages import wire_type
from ml.models.lora import apply_lora
from ml.models.transformer import DecoderLM

#: The linear layers that get LoRA adapters: every projection of both dependency groups.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@wire_type
@dataclass(frozen=True)
class Structure:
    """Kept heads and FFN channels of every block (sorted original indices); the pruning plan
    the server sends a client, so it crosses the wire as JSON lists."""

    heads: tuple[tuple[int, ...], ...]
    channels: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        # Lists from the wire become tuples again: a structure is hashable (a cache key).
        object.__setattr__(self, "heads", tuple(tuple(h) for h in self.heads))
        object.__setattr__(self, "channels", tuple(tuple(c) for c in self.channels))

    @classmethod
    def full(cls, base: DecoderLM) -> Structure:
        return cls(tuple(tuple(range(b.attn.n_heads)) for b in base.blocks),
                   tuple(tuple(range(b.mlp.d_ff)) for b in base.blocks))

    def num_heads(self) -> int:
        return sum(len(h) for h in self.heads)

    def num_channels(self) -> int:
        return sum(len(c) for c in self.channels)

    def without(self, heads: set[tuple[int, int]], channels: set[tuple[int, int]]) -> Structure:
        """This structure with the (block, head) and (block, channel) pairs removed."""
        return Structure(
            tuple(tuple(h for h in hs if (b, h) not in heads) for b, hs in enumerate(self.heads)),
            tuple(tuple(c for c in cs if (b, c) not in channels)
                  for b, cs in enumerate(self.channels)))


def prunable_params(base: DecoderLM, structure: Structure) -> int:
    """Parameters of the attention and FFN projections that ``structure`` keeps."""
    d, hd = base.cfg.d_model, base.head_dim
    return sum(4 * d * hd * len(h) + 3 * d * len(c)
               for h, c in zip(structure.heads, structure.channels))


def sparsity(base: DecoderLM, structure: Structure) -> float:
    """Fraction of the prunable parameters (attention + FFN projections) removed."""
    return 1.0 - prunable_params(base, structure) / prunable_params(base, Structure.full(base))


def prune_decoder(base: DecoderLM, structure: Structure) -> DecoderLM:
    """A copy of ``base`` with only the heads and channels of ``structure`` (really smaller)."""
    model = copy.deepcopy(base)
    for block, heads, channels in zip(model.blocks, structure.heads, structure.channels):
        if len(heads) != block.attn.n_heads:
            block.attn.prune_heads(heads)
        if len(channels) != block.mlp.d_ff:
            block.mlp.prune_channels(channels)
    return model


def build_client_model(base: DecoderLM, head: dict[str, torch.Tensor], structure: Structure,
                       rank: int | None, scaling: float) -> TopicClassifier:
    """The model a client trains: the pruned frozen base, LoRA of ``rank`` on every projection
    (none when ``rank`` is None) and a trainable copy of the classification head (``head``:
    its ``weight`` and ``bias``).

    LoRA's ``alpha`` is ``scaling * rank`` (ours): the update ``scaling * B @ A`` keeps one
    scale whatever the rank, so truncating factors to a lower rank keeps the top components'
    meaning, which heterogeneous-rank aggregation relies on."""
    alpha = scaling * rank if rank is not None else 1.0
    decoder = prune_decoder(base, structure)
    for p in decoder.parameters():
        p.requires_grad_(False)
    model = TopicClassifier(decoder, head["weight"].shape[0])
    model.classifier.load_state_dict(head)
    if rank is not None:
        apply_lora(decoder, LORA_TARGETS, rank=rank, alpha=alpha, freeze_base=True)
    for p in model.classifier.parameters():
        p.requires_grad_(True)
    return model
