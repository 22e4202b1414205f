"""Max-pooling on the CPU through torch's vectorised kernel, with torch's results bit for bit.

Ours (issue #20's profile): torch's CPU max-pool kernel for NCHW tensors is scalar. For
``cnn-small`` at batch 32 each of its two pools took ~1.7 ms of a ~9 ms SGD step, more than the
convolution before it. The channels-last kernel is vectorised over channels (~0.3 ms).
:class:`MaxPool2d` pools a channels-last copy of its input and hands back an NCHW output; its
backward pass is torch's own NCHW max-pool backward, given the channels-last kernel's indices.
Both kernels keep the first maximum of a window (rows, then columns; NaN wins) and number it
``row * width + column`` in its plane, so outputs, indices and gradients are those of
:class:`torch.nn.MaxPool2d` bit for bit (a test compares them, ties and NaNs included).
Elsewhere (CUDA, 3-d inputs, ``return_indices``) it is :class:`torch.nn.MaxPool2d` itself.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair


class _ChannelsLastMaxPool2d(torch.autograd.Function):
    """Forward on a channels-last copy; backward by torch's NCHW max-pool backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel_size, stride, padding, dilation,
                ceil_mode: bool) -> torch.Tensor:
        out, indices = F.max_pool2d(x.contiguous(memory_format=torch.channels_last),
                                    kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                                    return_indices=True)
        # x is the previous layer's output, which autograd keeps anyway (e.g. ReLU's result).
        ctx.save_for_backward(x, indices.contiguous())
        ctx.pool = (kernel_size, stride, padding, dilation, ceil_mode)
        return out.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, indices = ctx.saved_tensors
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(grad, x, *ctx.pool, indices)
        return grad_x, None, None, None, None, None


class MaxPool2d(nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` (same arguments, same results) that runs faster on the CPU;
    see the module's docstring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or self.return_indices:
            return super().forward(x)
        pool = (_pair(self.kernel_size), _pair(self.stride), _pair(self.padding),
                _pair(self.dilation), self.ceil_mode)
        if torch.is_grad_enabled() and x.requires_grad:
            return _ChannelsLastMaxPool2d.apply(x, *pool)
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), *pool[:4],
                            ceil_mode=self.ceil_mode).contiguous()
