"""A client's local round: LoRA fine-tuning on the frozen (pruned) base, with iterative
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

from ml.algorithms.fedspine.adapters import LoRAState, scatter_state, slice_state, update_norm
from ml.algorithms.fedspine.importance import ImportanceTracker, least_important
from ml.algorithms.fedspine.structure import (LORA_TARGETS, Structure, build_client_model,
                                              sparsity)
from ml.algorithms.fedspine.task import TopicClassifier
from ml.fl.batches import BatchStream
from ml.models.flops import TRAINING_FLOPS_FACTOR, count_flops
from ml.models.lora import load_lora_state_dict, lora_state_dict
from ml.models.transformer import DecoderLM
from ml.testbed.emulator import EmulatedDevice


@dataclass(frozen=True)
class Plan:
    """What the server asks of a client this round."""

    rank: int
    target_sparsity: float  # sparsity to reach by the end of the round
    track_importance: bool  # estimate importance (needed to prune this round)
    ratio: float = 0.0  # the bandit's pruning ratio, for reporting


@dataclass
class Client:
    """A client on an emulated device: its data, probe batch, structure and importance."""

    index: int
    device: EmulatedDevice
    stream: BatchStream
    probe_x: torch.Tensor
    probe_y: torch.Tensor
    structure: Structure
    tracker: ImportanceTracker
    rank: int = 0  # the rank HetLoRA's self-pruning maintains

    @property
    def name(self) -> str:
        return f"client-{self.index:02d}"

    @property
    def num_samples(self) -> int:
        return len(self.stream)


@dataclass
class LocalResult:
    state: LoRAState  # client-shaped adapters after training
    classifier: dict[str, torch.Tensor]
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
    """What every local round shares: base, data, hyperparameters and a FLOPs cache."""

    def __init__(self, base: DecoderLM, train_x: torch.Tensor, train_y: torch.Tensor, lr: float,
                 scaling: float, prune_every: int, local_steps: int):
        self.base, self.train_x, self.train_y = base, train_x, train_y
        self.lr, self.scaling = lr, scaling
        self.prune_every, self.local_steps = prune_every, local_steps
        self.head_dim = base.head_dim
        self._flops: dict[Structure, tuple[int, int]] = {}

    def model(self, classifier: torch.nn.Linear, structure: Structure, rank: int | None,
              state: LoRAState | None) -> TopicClassifier:
        model = build_client_model(self.base, classifier, structure, rank, self.scaling)
        if state is not None:
            load_lora_state_dict(model, state)
        return model

    def forward_flops(self, structure: Structure, rank: int | None) -> int:
        """Forward FLOPs of one sample: the pruned base counted by torch (cached per
        structure) plus the adapters, ``2·r·(in + out)`` per token and adapted layer."""
        if structure not in self._flops:
            plain = self.model(torch.nn.Linear(self.base.cfg.d_model, 1), structure, None, None)
            self._flops[structure] = (count_flops(plain, self.train_x[:1]),
                                      sum(m.in_features + m.out_features
                                          for name, m in plain.decoder.named_modules()
                                          if name.rsplit(".", 1)[-1] in LORA_TARGETS))
        base_flops, lora_width = self._flops[structure]
        return base_flops + (2 * rank * lora_width * self.train_x.shape[1] if rank else 0)


@torch.no_grad()
def probe_loss(model: TopicClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    loss = F.cross_entropy(model(x), y).item()
    model.train()
    return loss


def local_round(ws: Workspace, client: Client, global_lora: LoRAState,
                classifier: torch.nn.Linear, plan: Plan) -> LocalResult:
    """Run one round of local training (and pruning) for ``client``; update its structure."""
    structure, rank = client.structure, plan.rank
    s0 = sparsity(ws.base, structure)
    model = ws.model(classifier, structure, rank, slice_state(global_lora, structure, rank,
                                                              ws.head_dim))
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
                                        global_lora)
                new = structure.without(removed_h, removed_c)
                head = model.classifier
                model = ws.model(head, new, rank, slice_state(full, new, rank, ws.head_dim))
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
    client.structure = structure
    state = lora_state_dict(model)
    return LocalResult(
        state=state, classifier={k: v.detach().clone() for k, v in model.classifier.state_dict().items()},
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


def _batch(ws: Workspace, client: Client) -> tuple[torch.Tensor, torch.Tensor]:
    idx = client.stream.next()
    return ws.train_x.index_select(0, idx), ws.train_y.index_select(0, idx)
