"""Work and size of models: FLOPs per forward pass and bytes on the wire.

The emulated testbed turns these into time: compute time = FLOPs / device rate (the USTC
group's ``batch_size x FLOPs_per_sample / compute_density``), transfer time = bytes /
bandwidth.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ml.models.pooling import MaxPool2d

#: Training cost per sample relative to one forward pass (ours, the usual estimate): the backward
#: pass computes gradients with respect to both activations and weights, about twice the forward.
TRAINING_FLOPS_FACTOR = 3


def count_flops(module: nn.Module, example_input: torch.Tensor | tuple, **kwargs) -> int:
    """Forward FLOPs of one call ``module(example_input, **kwargs)``, counted by torch.

    Uses :class:`torch.utils.flop_counter.FlopCounterMode`, which counts matrix multiplies and
    convolutions (a multiply-add is 2 FLOPs) and ignores element-wise ops, norms and pooling.
    The count is for the whole batch in ``example_input``. A tuple is passed as positional args.
    """
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    # Inputs with an autograd history (e.g. a bottom half's output) upset the counter's hooks.
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            flops = layer_flops(module, args, kwargs)
            if flops is not None:
                return flops
            with FlopCounterMode(display=False) as counter:
                module(*args, **kwargs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


#: Layers FlopCounterMode counts: a multiply-add per weight element and output element.
_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: Layers it counts nothing for (element-wise, pooling, reshaping).
_FREE = (nn.ReLU, nn.MaxPool2d, MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout)


def layer_flops(module: nn.Module, args: tuple, kwargs: dict | None = None) -> int | None:
    """FlopCounterMode's count, taken by hooks on the convolutions and linear layers, for a
    module made only of those, FLOP-free layers and chains of them (``nn.Sequential``, a
    :class:`~ml.models.base.SplittableModel` that runs its stages); None for any other module.

    Ours: FlopCounterMode is a dispatch mode whose first use imports torch._dynamo, ~1.2 s of
    a run's start-up. A test checks that both counts agree on every model of the catalogue.
    """
    from ml.models.base import SplittableModel

    for m in module.modules():
        kind = type(m)
        chain = kind is nn.Sequential or (isinstance(m, SplittableModel)
                                          and kind.forward is SplittableModel.forward)
        if not (chain or kind in _COUNTED or kind in _FREE) or m._forward_hooks \
                or m._forward_pre_hooks:
            return None
    total = 0

    def count(layer: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += 2 * output.numel() * layer.weight[0].numel()

    handles = [m.register_forward_hook(count) for m in module.modules() if type(m) in _COUNTED]
    try:
        module(*args, **(kwargs or {}))
    finally:
        for handle in handles:
            handle.remove()
    return total


def training_flops_per_sample(module: nn.Module, input_shape: tuple[int, ...],
                              dtype: torch.dtype = torch.float32) -> int:
    """FLOPs to train on one sample of shape ``input_shape`` (no batch dimension).

    :data:`TRAINING_FLOPS_FACTOR` (3) times the forward FLOPs. Use ``dtype=torch.long`` for
    token-id inputs.
    """
    example = torch.zeros((1, *input_shape), dtype=dtype)
    return TRAINING_FLOPS_FACTOR * count_flops(module, example)


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor sent as is (its own dtype), e.g. smashed data or hidden states."""
    return t.numel() * t.element_size()


def model_bytes(module: nn.Module, include_buffers: bool = False) -> int:
    """Bytes to send ``module``'s parameters as fp32 (4 bytes each), frozen ones included.

    ``include_buffers`` adds buffers (e.g. BatchNorm running statistics), also as 4-byte values,
    for methods that exchange the full state dict.
    """
    n = sum(p.numel() for p in module.parameters())
    if include_buffers:
        n += sum(b.numel() for b in module.buffers())
    return 4 * n
