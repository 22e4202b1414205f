"""What every rank of a split-learning run builds before its role starts (``RoleProgram.setup``):
the federation, the model cut in two, and the cut's per-sample costs."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ml.algorithms.split_learning.config import SplitCoreConfig
from ml.algorithms.split_learning.training import SplitCosts
from ml.config import ConfigError
from ml.distributed.peers import Mailbox
from ml.fl import Federation, build_federation


@dataclass
class SplitContext:
    """The federation, the model's two halves (views of ``fed.model``) and their costs."""

    config: SplitCoreConfig
    fed: Federation
    bottom: nn.Module
    top: nn.Module
    costs: SplitCosts
    #: Worker-to-worker messages (ParallelSFL), set by ``connect`` before workers are built.
    mailbox: Mailbox | None = None

    @property
    def split_point(self) -> str:
        return self.config.split_point or self.fed.model.default_split


def split_context(config: SplitCoreConfig, device: torch.device) -> SplitContext:
    """Build the federation and cut its model at ``config.split_point`` (a ConfigError naming
    it when the model has no such stage)."""
    fed = build_federation(config, device)
    try:
        bottom, top = fed.model.split(config.split_point)
    except ValueError as exc:
        raise ConfigError({"split_point": str(exc)}) from None
    costs = SplitCosts.measure(bottom, top, fed.dataset.input_shape, fed.device)
    return SplitContext(config, fed, bottom, top, costs)
