"""Low-rank adapters (LoRA, Hu et al., arXiv 2106.09685) for FedLoRA, HetLoRA and FedSpine.

``LoRALinear`` wraps a frozen ``nn.Linear``: ``y = base(x) + scaling * B(A(dropout(x)))`` with
``A`` [rank, in] Kaiming-uniform initialised, ``B`` [out, rank] zeros (so a fresh adapter leaves
the model unchanged) and ``scaling = alpha / rank``, as in PEFT.

Rank changes (HetLoRA-style heterogeneous ranks): :meth:`LoRALinear.resize_rank` keeps the first
``r`` rows of A and columns of B and keeps the *scaling* (ours): shrinking gives exactly the
top-r truncation of the update, growing adds zero columns to B and changes nothing.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA wraps nn.Linear, got {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.merged = False
        self._weight_before_merge: torch.Tensor | None = None

    # The wrapped layer's shape, so code reading shapes from layers keeps working.
    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    def delta_weight(self) -> torch.Tensor:
        """The update ``scaling * B @ A`` that :meth:`merge` adds to the base weight."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (faster inference). The original weight is kept
        so :meth:`unmerge` restores it bit for bit."""
        if self.merged:
            return
        self._weight_before_merge = self.base.weight.detach().clone()
        self.base.weight.add_(self.delta_weight())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` exactly."""
        if not self.merged:
            return
        self.base.weight.copy_(self._weight_before_merge)
        self._weight_before_merge = None
        self.merged = False

    def lora_parameters(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_B]

    @torch.no_grad()
    def resize_rank(self, rank: int) -> None:
        """Change the rank, keeping the first rows of A / columns of B and the scaling."""
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if self.merged:
            raise RuntimeError("unmerge before resizing the rank")
        old = self.rank
        if rank <= old:
            a, b = self.lora_A[:rank].clone(), self.lora_B[:, :rank].clone()
        else:
            extra_a = torch.empty(rank - old, self.in_features, dtype=self.lora_A.dtype,
                                  device=self.lora_A.device)
            nn.init.kaiming_uniform_(extra_a, a=math.sqrt(5))
            a = torch.cat([self.lora_A, extra_a])
            b = torch.cat([self.lora_B, self.lora_B.new_zeros(self.out_features, rank - old)], dim=1)
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(b)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"


def apply_lora(model: nn.Module, target_names: Iterable[str] = ("q_proj", "v_proj"),
               rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               freeze_base: bool = True) -> list[tuple[str, LoRALinear]]:
    """Wrap every ``nn.Linear`` whose attribute name is in ``target_names`` with LoRA.

    With ``freeze_base`` every other parameter of ``model`` is frozen too, so only the adapters
    train. Returns ``(dotted name, LoRALinear)`` pairs in module order.
    """
    targets = set(target_names)
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    found = [(name, module) for name, module in model.named_modules()
             if type(module) is nn.Linear and name.rsplit(".", 1)[-1] in targets]
    if not found:
        raise ValueError(f"no nn.Linear named any of {sorted(targets)} in the model")
    wrapped = []
    for name, linear in found:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        lora = LoRALinear(linear, rank, alpha, dropout)
        setattr(parent, attr, lora)
        wrapped.append((name, lora))
    return wrapped


def lora_modules(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """Every ``LoRALinear`` in ``model`` with its dotted name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (``<layer>.lora_A`` / ``.lora_B``), detached copies."""
    state = {}
    for name, module in lora_modules(model):
        state[f"{name}.lora_A"] = module.lora_A.detach().clone()
        state[f"{name}.lora_B"] = module.lora_B.detach().clone()
    return state


@torch.no_grad()
def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors from ``state`` into ``model``'s LoRA layers (same names and ranks).

    Raises ``KeyError`` naming missing or unexpected keys and ``ValueError`` on a shape
    mismatch (resize the rank first).
    """
    modules = dict(lora_modules(model))
    expected = {f"{n}.{p}" for n in modules for p in ("lora_A", "lora_B")}
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise KeyError(f"LoRA state mismatch: missing {missing}, unexpected {unexpected}")
    for key, tensor in state.items():
        name, _, param = key.rpartition(".")
        target = getattr(modules[name], param)
        if target.shape != tensor.shape:
            raise ValueError(f"{key}: shape {tuple(tensor.shape)} != model's {tuple(target.shape)}")
        target.copy_(tensor)


def remove_lora(model: nn.Module, merge: bool = True) -> None:
    """Replace every ``LoRALinear`` by its base Linear, with the update merged in (default) or
    dropped; e.g. before structured pruning."""
    for name, module in lora_modules(model):
        if merge:
            module.merge()
        else:
            module.unmerge()
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, module.base)
