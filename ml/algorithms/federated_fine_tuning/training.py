"""The client's role: a local round: LoRA fine-tuning on the frozen (pruned) base, with iterative
structured pruning: prune a step, recover with LoRA for ``prune_every`` iterations, repeat.

Within a round the client moves from its current sparsity ``s0`` to the plan's target in equal
steps, one at each pruning point ``t = prune_every, 2·prune_every, ... < local_steps`` (every
pruning step is followed by recovery iterations). A step keeps ``round((1 - s)·total)`` heads
and as many channels (same fraction of each, ranked across blocks by the smoothed LoRA-gradient
importance), so the parameter sparsity of the projections is ``s``. After a step the model is
rebuilt physically smaller; adapters of the kept structures carry over and the AdamW state
restarts (ours).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ml.algorithms.federated_fine_tuning.adapters import (LoRAState, scatter_state, slice_state,
                                                          update_norm)
from ml.algorithms.federated_fine_tuning.importance import ImportanceTracker, least_important
from ml.algorithms.federated_fine_tuning.structure import (LORA_TARGETS, Structure,
                                                           build_client_model, sparsity)
from ml.algorithms.federated_fine_tuning.task import TopicClassifier
from ml.distributed.messages import wire_type
from ml.fl.batches import BatchStream
from ml.models.flops import TRAINING_FLOPS_FACTOR, count_flops
from ml.models.lora import load_lora_state_dict, lora_state_dict
from ml.models.transformer import DecoderLM

Head = dict[str, torch.Tensor]  # the classification head's ``weight`` and ``bias``


@wire_type
@dataclass(frozen=True)
class Plan:
    """What the server asks of a client this round."""

    rank: int
    target_sparsity: float  # sparsity to reach by the end of the round
    track_importance: bool  # estimate importance (needed to prune this round)
    ratio: float = 0.0  # the bandit's pruning ratio, for reporting


@wire_type
@dataclass
class LocalResult:
    """What a client sends back after its round (adapters and head as tensors)."""

    state: LoRAState  # client-shaped adapters after training
    classifier: Head
    structure: Structure
    rank: int
    samples: int
    flops: float  # training FLOPs spent
    train_loss: float
    loss_before: float
    loss_after: float
    sparsity_before: float
    sparsity_after: float
    update_norm: float


class Workspace:
    """What every local round of a rank shares: base, data, hyperparameters, the shapes of the
    global adapters and a FLOPs cache."""

    def __init__(self, base: DecoderLM, train_x: torch.Tensor, train_y: torch.Tensor, lr: float,
                 scaling: float, prune_every: int, local_steps: int,
                 adapter_shapes: LoRAState | None = None):
        self.base, self.train_x, self.train_y = base, train_x, train_y
        self.lr, self.scaling = lr, scaling
        self.prune_every, self.local_steps = prune_every, local_steps
        self.head_dim = base.head_dim
        #: Tensors of the global adapters' shapes (values unused): where a client's adapters go
        #: when it re-slices them after a pruning step.
        self.adapter_shapes = adapter_shapes
        self._flops: dict[Structure, tuple[int, int]] = {}

    def model(self, head: Head, structure: Structure, rank: int | None,
              state: LoRAState | None) -> TopicClassifier:
        model = build_client_model(self.base, head, structure, rank, self.scaling)
        if state is not None:
            load_lora_state_dict(model, state)
        return model

    def forward_flops(self, structure: Structure, rank: int | None) -> int:
        """Forward FLOPs of one sample: the pruned base counted by torch (cached per
        structure) plus the adapters, ``2·r·(in + out)`` per token and adapted layer."""
        if structure not in self._flops:
            d = self.base.cfg.d_model
            plain = self.model({"weight": torch.zeros(1, d), "bias": torch.zeros(1)}, structure,
                               None, None)
            self._flops[structure] = (count_flops(plain, self.train_x[:1]),
                                      sum(m.in_features + m.out_features
                                          for name, m in plain.decoder.named_modules()
                                          if name.rsplit(".", 1)[-1] in LORA_TARGETS))
        base_flops, lora_width = self._flops[structure]
        return base_flops + (2 * rank * lora_width * self.train_x.shape[1] if rank else 0)


@dataclass
class ClientData:
    """What only the client holds: its batches, probe batch and smoothed importance."""

    index: int
    stream: BatchStream
    probe_x: torch.Tensor
    probe_y: torch.Tensor
    tracker: ImportanceTracker


class FineTuneClient:
    """A client's role: :meth:`train` runs one local round on what the server sent."""

    def __init__(self, ws: Workspace, data: ClientData):
        self.ws = ws
        self.data = data

    def train(self, plan: Plan, structure: Structure, adapters: LoRAState,
              head: Head) -> LocalResult:
        return local_round(self.ws, self.data, structure, adapters, head, plan)


@torch.no_grad()
def probe_loss(model: TopicClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    loss = F.cross_entropy(model(x), y).item()
    model.train()
    return loss


def local_round(ws: Workspace, client: ClientData, structure: Structure, adapters: LoRAState,
                head: Head, plan: Plan) -> LocalResult:
    """One round of local training (and pruning) from ``structure`` (the server's pruning
    plan), ``adapters`` (the client's slice of the global ones at ``plan.rank``) and ``head``;
    the result carries the structure the client ends the round with."""
    rank = plan.rank
    s0 = sparsity(ws.base, structure)
    model = ws.model(head, structure, rank, adapters)
    loss_before = probe_loss(model, client.probe_x, client.probe_y)
    opt = _optimizer(model, ws.lr)
    points = _prune_points(ws.local_steps, ws.prune_every) if plan.target_sparsity > s0 + 1e-9 \
        else []
    total_heads = sum(b.attn.n_heads for b in ws.base.blocks)
    total_channels = sum(b.mlp.d_ff for b in ws.base.blocks)
    flops = 0.0
    loss_sum, samples = 0.0, 0
    for t in range(ws.local_steps):
        if t in points:
            q = s0 + (plan.target_sparsity - s0) * (points.index(t) + 1) / len(points)
            removed_h = least_important(client.tracker.heads, structure.heads,
                                        round((1 - q) * total_heads))
            removed_c = least_important(client.tracker.channels, structure.channels,
                                        round((1 - q) * total_channels))
            if removed_h or removed_c:
                full, _ = scatter_state(lora_state_dict(model), structure, rank, ws.head_dim,
                                        ws.adapter_shapes)
                new = structure.without(removed_h, removed_c)
                model = ws.model(model.classifier.state_dict(), new, rank,
                                 slice_state(full, new, rank, ws.head_dim))
                structure, opt = new, _optimizer(model, ws.lr)
        x, y = _batch(ws, client)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if plan.track_importance:
            client.tracker.update(model.decoder, structure)
        opt.step()
        loss_sum += loss.item() * len(y)
        samples += len(y)
        flops += len(y) * TRAINING_FLOPS_FACTOR * ws.forward_flops(structure, rank)
    state = lora_state_dict(model)
    return LocalResult(
        state=state,
        classifier={k: v.detach().clone() for k, v in model.classifier.state_dict().items()},
        structure=structure, rank=rank, samples=samples, flops=flops,
        train_loss=loss_sum / max(samples, 1), loss_before=loss_before,
        loss_after=probe_loss(model, client.probe_x, client.probe_y),
        sparsity_before=s0, sparsity_after=sparsity(ws.base, structure),
        update_norm=update_norm(state, ws.scaling))


def _prune_points(steps: int, every: int) -> list[int]:
    points = list(range(every, steps, every))
    return points or ([steps // 2] if steps > 1 else [])


def _optimizer(model: TopicClassifier, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                             weight_decay=0.0)


def _batch(ws: Workspace, client: ClientData) -> tuple[torch.Tensor, torch.Tensor]:
    idx = client.stream.next()
    return ws.train_x.index_select(0, idx), ws.train_y.index_select(0, idx)
