"""The split-able model: a network written as named stages that can be cut in two.

Split learning (SplitFed, MergeSFL, ParallelSFL) runs a *bottom* submodel on the worker and a
*top* submodel on the server. Every image model here is an ordered list of named stages; a split
point is the name of the last stage kept in the bottom. Both halves hold the very same modules as
the full model, so ``top(bottom(x)) == model(x)`` and training a half trains the model.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class SplittableModel(nn.Module):
    """A model made of named stages run in order; ``split(point)`` cuts it after a stage.

    Subclasses pass their stages (and the split point their paper uses) to ``__init__``.
    Parameter names are ``stages.<stage>.<...>``; a half's names drop the ``stages.`` prefix.
    """

    def __init__(self, stages: OrderedDict[str, nn.Module], default_split: str):
        super().__init__()
        if len(stages) < 2:
            raise ValueError("a splittable model needs at least two stages")
        self.stages = nn.Sequential(stages)
        names = tuple(stages)
        #: Stage names after which the model may be cut (every stage but the last).
        self.split_points: tuple[str, ...] = names[:-1]
        if default_split not in self.split_points:
            raise ValueError(f"default split {default_split!r} is not one of {self.split_points}")
        #: The cut the method's paper uses when none is given.
        self.default_split: str = default_split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def split(self, point: str | None = None) -> tuple[nn.Sequential, nn.Sequential]:
        """Return ``(bottom, top)`` cut after stage ``point`` (default :attr:`default_split`).

        The halves share parameters and buffers with this model (no copies).
        """
        point = self.default_split if point is None else point
        if point not in self.split_points:
            raise ValueError(f"unknown split point {point!r}; choose one of {self.split_points}")
        items = list(self.stages.named_children())
        cut = [name for name, _ in items].index(point) + 1
        return nn.Sequential(OrderedDict(items[:cut])), nn.Sequential(OrderedDict(items[cut:]))
