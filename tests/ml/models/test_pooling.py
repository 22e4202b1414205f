"""ml.models.pooling.MaxPool2d gives torch.nn.MaxPool2d's outputs, indices and gradients bit
for bit (it only runs another torch kernel), ties and NaNs included."""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ml.models import build_model
from ml.models.pooling import MaxPool2d

SETTINGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1)),
]


def inputs_with_ties(shape: tuple[int, ...]) -> torch.Tensor:
    """ReLU'd noise (ties at 0), constant patches (ties at a positive value, as a convolution of
    an image's uniform background gives) and a NaN."""
    torch.manual_seed(0)
    x = torch.relu(torch.randn(shape))
    x[:, :, :4, :4] = 0.5
    x[0, 0, 5, 5] = float("nan")
    return x


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal bit for bit, NaNs in the same places."""
    nan = b.isnan()
    assert nan.any() and torch.equal(a.isnan(), nan) and torch.equal(a[~nan], b[~nan])


@pytest.mark.parametrize("settings", SETTINGS)
def test_forward_indices_and_gradient_equal_torchs(settings):
    x = inputs_with_ties((3, 5, 12, 11))
    ours, theirs = MaxPool2d(**settings), nn.MaxPool2d(**settings)
    assert_same(ours(x), theirs(x))  # no autograd: the plain path
    assert ours(x).is_contiguous()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = ours(a), theirs(b)
    assert_same(out_a, out_b)
    grad = torch.randn(out_b.shape)
    out_a.backward(grad)
    out_b.backward(grad)
    assert torch.equal(a.grad, b.grad)
    # The indices too (what the backward pass routes the gradient by).
    _, ours_idx = F.max_pool2d(x.contiguous(memory_format=torch.channels_last),
                               return_indices=True, **settings)
    _, torch_idx = F.max_pool2d(x, return_indices=True, **settings)
    assert torch.equal(ours_idx, torch_idx)


def test_return_indices_and_3d_inputs_fall_back_to_torch():
    x = inputs_with_ties((1, 2, 6, 8))
    assert_same(MaxPool2d(2)(x[0]), nn.MaxPool2d(2)(x[0]))
    out, idx = MaxPool2d(2, return_indices=True)(x)
    ref_out, ref_idx = nn.MaxPool2d(2, return_indices=True)(x)
    assert_same(out, ref_out)
    assert torch.equal(idx, ref_idx)


@pytest.mark.parametrize("name", ["cnn-small", "cnn"])
def test_training_a_cnn_gives_the_same_weights_as_torchs_pool(name):
    """SGD with momentum on real MNIST batches: every weight equal after 20 steps."""
    from ml.data import load_dataset

    data = load_dataset("mnist-5000")
    torch.manual_seed(1)
    ours = build_model(name, 10, (1, 28, 28))
    pools = [m for m in ours.modules() if isinstance(m, MaxPool2d)]
    assert len(pools) == 2
    theirs = copy.deepcopy(ours)
    for module in theirs.modules():
        for child_name, child in list(module.named_children()):
            if isinstance(child, MaxPool2d):
                setattr(module, child_name, nn.MaxPool2d(child.kernel_size))
    optimisers = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (ours, theirs)]
    for step in range(20):
        x, y = data.train_x[32 * step:32 * (step + 1)], data.train_y[32 * step:32 * (step + 1)]
        for model, optimiser in zip((ours, theirs), optimisers):
            optimiser.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimiser.step()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(p, q)
    with torch.inference_mode():
        assert torch.equal(ours(data.test_x), theirs(data.test_x))
