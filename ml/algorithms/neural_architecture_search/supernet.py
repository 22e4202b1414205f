"""A weight-sharing supernet of small CNNs with elastic depth, width and kernel (IMB-NAS step 2).

IMB-NAS (Duggal et al., arXiv 2210.00136; reproduced in arXiv 2406.16972) searches over the
subnets of a once-for-all style super-network (OFA, Cai et al. 2020; BigNAS, Yu et al. 2020).
Every subnet is a slice of the supernet's tensors, so training one subnet trains the weights it
shares with all others:

- **elastic depth**: a stage runs its first ``d`` blocks;
- **elastic width**: a stage's convolutions keep their first ``w`` output channels (and the next
  layer its first ``w`` input channels);
- **elastic kernel**: a block's ``k x k`` kernel is the centre of its largest kernel.

Training follows the **sandwich rule** (BigNAS): each step accumulates the gradients of the
largest subnet, the smallest subnet and ``n`` random subnets on the same batch, then takes one
optimiser step.

Ours ([I]: the papers do not give their search space):

- the space: a stem (fixed width), two stages of up to three blocks, per-stage width and depth,
  per-block kernel 3 or 5 (:class:`SearchSpace`); the first block of each stage halves the
  resolution, later blocks are residual;
- kernels are plain centre crops (OFA adds a learned kernel transform; we do not);
- channels are not re-sorted by importance (OFA's progressive shrinking does), and the sandwich
  rule uses labels only, without BigNAS's in-place distillation;
- BatchNorm as in OFA: training uses the batch's statistics (no running averages, which would
  mix subnets); before a subnet is evaluated, :meth:`SuperNet.calibrate` sets the running
  statistics of its channels from one pass over a calibration set (OFA's BN re-calibration).
  Evaluating a subnet that was not calibrated since the last training step is an error.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ml.models.flops import TRAINING_FLOPS_FACTOR


@dataclass(frozen=True)
class Arch:
    """One subnet: per stage its depth, its width, and one kernel size per active block."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not (len(self.depths) == len(self.widths) == len(self.kernels)):
            raise ValueError("depths, widths and kernels need one entry per stage")
        for depth, kernels in zip(self.depths, self.kernels):
            if len(kernels) != depth:
                raise ValueError(f"a stage of depth {depth} needs {depth} kernels, got {kernels}")

    @property
    def label(self) -> str:
        """Compact name, e.g. ``d2-3_w24-64_k35-553``."""
        kernels = "-".join("".join(str(k) for k in stage) for stage in self.kernels)
        return (f"d{'-'.join(map(str, self.depths))}_w{'-'.join(map(str, self.widths))}"
                f"_k{kernels}")

    def as_dict(self) -> dict:
        return {"depths": list(self.depths), "widths": list(self.widths),
                "kernels": [list(k) for k in self.kernels]}


@dataclass(frozen=True)
class SearchSpace:
    """The elastic dimensions: width and depth choices per stage, kernel choices per block."""

    stem_width: int = 8
    stage_widths: tuple[tuple[int, ...], ...] = ((8, 12, 16), (16, 24, 32))
    depths: tuple[int, ...] = (1, 2, 3)
    kernels: tuple[int, ...] = (3, 5)

    def __post_init__(self) -> None:
        if not self.stage_widths or any(not w or list(w) != sorted(set(w))
                                        for w in self.stage_widths):
            raise ValueError("each stage needs ascending, distinct width choices")
        if list(self.depths) != sorted(set(self.depths)) or self.depths[0] < 1:
            raise ValueError("depth choices must be ascending, distinct and >= 1")
        if list(self.kernels) != sorted(set(self.kernels)) or any(k % 2 == 0 for k in self.kernels):
            raise ValueError("kernel choices must be ascending, distinct and odd")

    @property
    def num_stages(self) -> int:
        return len(self.stage_widths)

    @property
    def max_kernel(self) -> int:
        return self.kernels[-1]

    def largest(self) -> Arch:
        """Every stage at its largest depth and width, every kernel at its largest."""
        return self._uniform(-1)

    def smallest(self) -> Arch:
        """Every stage at its smallest depth and width, every kernel at its smallest."""
        return self._uniform(0)

    def _uniform(self, pick: int) -> Arch:
        depth = self.depths[pick]
        return Arch(tuple(depth for _ in self.stage_widths),
                    tuple(w[pick] for w in self.stage_widths),
                    tuple((self.kernels[pick],) * depth for _ in self.stage_widths))

    def contains(self, arch: Arch) -> bool:
        """Whether ``arch`` is a subnet of this space."""
        if len(arch.depths) != self.num_stages:
            return False
        return all(d in self.depths and w in widths and all(k in self.kernels for k in ks)
                   for d, w, ks, widths in zip(arch.depths, arch.widths, arch.kernels,
                                               self.stage_widths))

    def sample(self, rng: np.random.Generator) -> Arch:
        """A subnet drawn uniformly per choice (depth, width, then each block's kernel)."""
        depths, widths, kernels = [], [], []
        for widths_choices in self.stage_widths:
            depth = int(rng.choice(self.depths))
            depths.append(depth)
            widths.append(int(rng.choice(widths_choices)))
            kernels.append(tuple(int(rng.choice(self.kernels)) for _ in range(depth)))
        return Arch(tuple(depths), tuple(widths), tuple(kernels))

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float) -> Arch:
        """Re-draw each choice of ``arch`` with probability ``prob``."""
        depths, widths, kernels = [], [], []
        for s, widths_choices in enumerate(self.stage_widths):
            depth = int(rng.choice(self.depths)) if rng.random() < prob else arch.depths[s]
            width = int(rng.choice(widths_choices)) if rng.random() < prob else arch.widths[s]
            old = arch.kernels[s]
            stage_kernels = tuple(
                int(rng.choice(self.kernels)) if (b >= len(old) or rng.random() < prob) else old[b]
                for b in range(depth))
            depths.append(depth)
            widths.append(width)
            kernels.append(stage_kernels)
        return Arch(tuple(depths), tuple(widths), tuple(kernels))

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Each stage's (depth, width, kernels) taken whole from ``a`` or ``b`` at random."""
        picks = [a if rng.random() < 0.5 else b for _ in range(self.num_stages)]
        return Arch(tuple(p.depths[s] for s, p in enumerate(picks)),
                    tuple(p.widths[s] for s, p in enumerate(picks)),
                    tuple(p.kernels[s] for s, p in enumerate(picks)))

    def size(self) -> int:
        """Number of distinct subnets."""
        per_stage = [len(w) * sum(len(self.kernels) ** d for d in self.depths)
                     for w in self.stage_widths]
        return int(np.prod(per_stage))

    def all_archs(self) -> Iterator[Arch]:
        """Every subnet (for small spaces and tests)."""
        stage_options = []
        for widths_choices in self.stage_widths:
            options = []
            for depth, width in itertools.product(self.depths, widths_choices):
                for ks in itertools.product(self.kernels, repeat=depth):
                    options.append((depth, width, tuple(ks)))
            stage_options.append(options)
        for combo in itertools.product(*stage_options):
            yield Arch(tuple(c[0] for c in combo), tuple(c[1] for c in combo),
                       tuple(c[2] for c in combo))


class ElasticConv2d(nn.Module):
    """A convolution whose output channels, input channels and kernel are slices of the largest."""

    def __init__(self, in_max: int, out_max: int, kernel_max: int, stride: int):
        super().__init__()
        self.stride = stride
        self.kernel_max = kernel_max
        self.weight = nn.Parameter(torch.empty(out_max, in_max, kernel_max, kernel_max))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def active_weight(self, in_channels: int, out_channels: int, kernel: int) -> torch.Tensor:
        """The view of :attr:`weight` a subnet uses (a slice, never a copy)."""
        start = (self.kernel_max - kernel) // 2
        return self.weight[:out_channels, :in_channels, start:start + kernel, start:start + kernel]

    def forward(self, x: torch.Tensor, out_channels: int, kernel: int) -> torch.Tensor:
        weight = self.active_weight(x.shape[1], out_channels, kernel)
        return F.conv2d(x, weight, stride=self.stride, padding=kernel // 2)


class ElasticBatchNorm2d(nn.Module):
    """BatchNorm whose affine parameters and running statistics are sliced to the active width.

    In training mode it normalises with the batch's statistics and updates nothing; in eval mode
    it uses the running statistics that :meth:`SuperNet.calibrate` set for the current subnet.
    """

    eps = 1e-5

    def __init__(self, channels_max: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels_max))
        self.bias = nn.Parameter(torch.zeros(channels_max))
        self.register_buffer("running_mean", torch.zeros(channels_max))
        self.register_buffer("running_var", torch.ones(channels_max))
        self.calibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        weight, bias = self.weight[:c], self.bias[:c]
        if self.calibrating:
            # momentum 1: the running statistics become this batch's (the slices are views).
            return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], weight, bias,
                                training=True, momentum=1.0, eps=self.eps)
        if self.training:
            return F.batch_norm(x, None, None, weight, bias, training=True, eps=self.eps)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], weight, bias,
                            training=False, eps=self.eps)


class ElasticBlock(nn.Module):
    """conv (k x k) -> norm -> ReLU, residual when the shape is kept."""

    def __init__(self, in_max: int, out_max: int, kernel_max: int, stride: int):
        super().__init__()
        self.conv = ElasticConv2d(in_max, out_max, kernel_max, stride)
        self.norm = ElasticBatchNorm2d(out_max)
        self.stride = stride

    def forward(self, x: torch.Tensor, width: int, kernel: int) -> torch.Tensor:
        y = F.relu(self.norm(self.conv(x, width, kernel)))
        if self.stride == 1 and x.shape[1] == width:
            y = y + x
        return y


class ElasticLinear(nn.Module):
    """The linear classification head; its input width follows the last stage's width."""

    def __init__(self, in_max: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_max))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.01)
        nn.init.zeros_(self.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight[:, :features.shape[1]], self.bias)


class SuperNet(nn.Module):
    """The weight-sharing CNN. ``forward(x, arch)`` runs subnet ``arch`` (default: the largest).

    The backbone is everything but :attr:`head` (:meth:`backbone_parameters`); :meth:`features`
    returns the pooled features a subnet feeds the head.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int],
                 space: SearchSpace | None = None):
        super().__init__()
        self.space = space or SearchSpace()
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)
        channels, height, _ = self.input_shape
        kernel_max = self.space.max_kernel
        # Ours: large inputs (MNIST, CIFAR) are halved by the stem; 8x8 digits are not.
        stem_stride = 2 if height >= 16 else 1
        self.stem = ElasticConv2d(channels, self.space.stem_width, 3, stem_stride)
        self.stem_norm = ElasticBatchNorm2d(self.space.stem_width)
        self.stages = nn.ModuleList()
        in_max = self.space.stem_width
        for widths in self.space.stage_widths:
            blocks = nn.ModuleList(
                ElasticBlock(in_max if b == 0 else widths[-1], widths[-1], kernel_max,
                             stride=2 if b == 0 else 1)
                for b in range(self.space.depths[-1]))
            self.stages.append(blocks)
            in_max = widths[-1]
        self.head = ElasticLinear(in_max, num_classes)
        self._flops: dict[Arch, int] = {}
        #: The subnet whose BatchNorm statistics are calibrated (None after any training).
        self.calibrated_for: Arch | None = None

    def train(self, mode: bool = True) -> "SuperNet":
        if mode:
            self.calibrated_for = None
        return super().train(mode)

    @torch.no_grad()
    def calibrate(self, arch: Arch, x: torch.Tensor) -> None:
        """Set the BatchNorm running statistics of subnet ``arch`` from one pass over ``x``.

        Leaves the supernet in eval mode, ready to evaluate ``arch``.
        """
        norms = [m for m in self.modules() if isinstance(m, ElasticBatchNorm2d)]
        for m in norms:
            m.calibrating = True
        try:
            self.features(x, arch)
        finally:
            for m in norms:
                m.calibrating = False
        self.eval()
        self.calibrated_for = arch

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter except the head's."""
        return (p for name, p in self.named_parameters() if not name.startswith("head."))

    def features(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        arch = arch or self.space.largest()
        if not self.training and self.calibrated_for != arch and not self._calibrating():
            raise RuntimeError(f"subnet {arch.label} is evaluated without BatchNorm calibration; "
                               "call calibrate(arch, x) first")
        h = F.relu(self.stem_norm(self.stem(x, self.space.stem_width, 3)))
        for blocks, depth, width, kernels in zip(self.stages, arch.depths, arch.widths,
                                                 arch.kernels):
            for block, kernel in zip(blocks[:depth], kernels):
                h = block(h, width, kernel)
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        return self.head(self.features(x, arch))

    def _calibrating(self) -> bool:
        return self.stem_norm.calibrating

    def active_parameters(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The slices (views into this supernet's parameters) that subnet ``arch`` uses."""
        if not self.space.contains(arch):
            raise ValueError(f"{arch.label} is not in the search space")
        stem_w = self.space.stem_width
        views = {
            "stem.weight": self.stem.active_weight(self.input_shape[0], stem_w, 3),
            "stem_norm.weight": self.stem_norm.weight[:stem_w],
            "stem_norm.bias": self.stem_norm.bias[:stem_w],
        }
        in_width = stem_w
        for s, (blocks, depth, width, kernels) in enumerate(
                zip(self.stages, arch.depths, arch.widths, arch.kernels)):
            for b, (block, kernel) in enumerate(zip(blocks[:depth], kernels)):
                prefix = f"stages.{s}.{b}"
                views[f"{prefix}.conv.weight"] = block.conv.active_weight(in_width, width, kernel)
                views[f"{prefix}.norm.weight"] = block.norm.weight[:width]
                views[f"{prefix}.norm.bias"] = block.norm.bias[:width]
                in_width = width
        views["head.weight"] = self.head.weight[:, :in_width]
        views["head.bias"] = self.head.bias
        return views

    def parameter_count(self, arch: Arch) -> int:
        """Number of weights subnet ``arch`` uses."""
        return sum(v.numel() for v in self.active_parameters(arch).values())

    def flops(self, arch: Arch) -> int:
        """Forward FLOPs of one sample through subnet ``arch`` (counted by torch, cached).

        Convolutions and the head, as :func:`ml.models.flops.count_flops` counts them; counted in
        training mode (batch statistics) so that no calibration is needed.
        """
        if arch not in self._flops:
            example = torch.zeros((2, *self.input_shape), device=self.head.weight.device)
            was_training = self.training
            calibrated = self.calibrated_for
            super().train(True)  # nn.Module's: counting must not drop the calibration
            try:
                with torch.no_grad(), FlopCounterMode(display=False) as counter:
                    self(example, arch)
            finally:
                super().train(was_training)
                self.calibrated_for = calibrated
            self._flops[arch] = int(counter.get_total_flops()) // 2
        return self._flops[arch]

    def head_flops(self, arch: Arch) -> int:
        """Forward FLOPs of the linear head for one sample of subnet ``arch``."""
        return 2 * arch.widths[-1] * self.num_classes


def training_flops(supernet: SuperNet, arch: Arch, batch_size: int, head_only: bool) -> int:
    """FLOPs of one training pass of ``batch_size`` samples through subnet ``arch``.

    Full training costs :data:`TRAINING_FLOPS_FACTOR` times the forward; with a frozen backbone
    only the head has a backward pass (the backbone runs forward once).
    """
    if head_only:
        forward = supernet.flops(arch)
        return batch_size * (forward + (TRAINING_FLOPS_FACTOR - 1) * supernet.head_flops(arch))
    return batch_size * TRAINING_FLOPS_FACTOR * supernet.flops(arch)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepResult:
    """What one training step did: the subnets it trained, their mean loss and its FLOPs."""

    archs: list[Arch]
    loss: float
    flops: int


def sandwich_archs(space: SearchSpace, rng: np.random.Generator, num_random: int) -> list[Arch]:
    """The sandwich rule's subnets for one step: largest, smallest, then ``num_random`` random."""
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(num_random))]


def train_step(supernet: SuperNet, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, archs: list[Arch], loss_fn: LossFn,
               head_only: bool = False) -> StepResult:
    """Accumulate (sum) the gradients of every subnet in ``archs`` on one batch, then step once.

    Returns the subnets' mean loss.

    With ``head_only`` the backbone runs without autograd (frozen); only the head learns.
    """
    optimizer.zero_grad(set_to_none=True)
    total_loss, flops = 0.0, 0
    for arch in archs:
        if head_only:
            with torch.no_grad():
                feats = supernet.features(x, arch)
            logits = supernet.head(feats)
        else:
            logits = supernet(x, arch)
        loss = loss_fn(logits, y)
        loss.backward()  # gradients add up over the subnets, as in BigNAS
        total_loss += float(loss.detach())
        flops += training_flops(supernet, arch, len(y), head_only)
    optimizer.step()
    return StepResult(archs=list(archs), loss=total_loss / len(archs), flops=flops)


def sandwich_step(supernet: SuperNet, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor, rng: np.random.Generator, loss_fn: LossFn,
                  num_random: int = 2, head_only: bool = False) -> StepResult:
    """One sandwich-rule step: largest, smallest and ``num_random`` random subnets, one update."""
    archs = sandwich_archs(supernet.space, rng, num_random)
    return train_step(supernet, optimizer, x, y, archs, loss_fn, head_only=head_only)
