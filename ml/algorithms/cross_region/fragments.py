"""Model fragments: the parameter groups that Streaming DiLoCo and CoCoDC synchronise one at a time.

Streaming DiLoCo (arXiv 2501.18512) splits the transformer into P fragments; the CoCoDC authors'
code (``isaacveg/crosstrain``; Streaming DiLoCo step 1) lists the model as units
``[embed, block_0, ..., block_{L-1}, norm, head]`` and deals them out *strided* (unit i goes to
fragment i mod P) or *sequentially* (contiguous runs). DiLoCo is the special case P = 1.

Units are found generically, so any ``nn.Module`` works: the module's own direct parameters form
one unit, each child is one unit, and a ``ModuleList``/``Sequential`` child contributes one unit per
element (a decoder's ``blocks``). Tied weights appear once, under their first name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

FragmentPattern = Literal["strided", "sequential"]


@dataclass(frozen=True)
class Fragment:
    """One synchronisation unit: the names of its parameters and their total size."""

    index: int
    names: tuple[str, ...]
    numel: int
    tensor_numels: tuple[int, ...]


def model_units(model: nn.Module) -> list[list[str]]:
    """Parameter names of ``model`` grouped into layer units, in module order.

    Units without trainable parameters (or whose only parameters are tied to an earlier unit)
    are dropped.
    """
    owner: dict[int, str] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            owner.setdefault(id(param), name)
    seen: set[int] = set()

    def unit_of(module: nn.Module, recurse: bool) -> list[str]:
        names = []
        for param in module.parameters(recurse=recurse):
            if id(param) in owner and id(param) not in seen:
                seen.add(id(param))
                names.append(owner[id(param)])
        return names

    units: list[list[str]] = [unit_of(model, recurse=False)]
    for child in model.children():
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            units.extend(unit_of(sub, recurse=True) for sub in child)
        else:
            units.append(unit_of(child, recurse=True))
    return [unit for unit in units if unit]


def make_fragments(model: nn.Module, count: int,
                   pattern: FragmentPattern = "strided") -> list[Fragment]:
    """Split ``model``'s trainable parameters into ``count`` fragments by ``pattern``.

    Raises ``ValueError`` when the model has fewer layer units than fragments.
    """
    units = model_units(model)
    if count < 1:
        raise ValueError(f"fragment count must be >= 1, got {count}")
    if count > len(units):
        raise ValueError(f"cannot make {count} fragments from {len(units)} layer units")
    groups: list[list[str]] = [[] for _ in range(count)]
    per = -(-len(units) // count)
    for i, unit in enumerate(units):
        target = i % count if pattern == "strided" else min(i // per, count - 1)
        groups[target].extend(unit)
    sizes = dict((name, p.numel()) for name, p in model.named_parameters())
    fragments = []
    for index, names in enumerate(groups):
        if not names:  # sequential split of few units can leave the last group empty
            raise ValueError(f"fragment {index} would be empty; use fewer fragments")
        numels = tuple(sizes[n] for n in names)
        fragments.append(Fragment(index, tuple(names), sum(numels), numels))
    return fragments
