"""FLOP and byte counts that the emulated testbed turns into time."""
import torch
from torch import nn

from ml.models import build_model, count_flops, model_bytes, tensor_bytes, training_flops_per_sample


def test_linear_layer_costs_two_flops_per_multiply_add():
    layer = nn.Linear(10, 20)
    assert count_flops(layer, torch.zeros(4, 10)) == 2 * 4 * 10 * 20
    assert training_flops_per_sample(layer, (10,)) == 3 * 2 * 10 * 20


def test_split_halves_add_up_to_the_model():
    model = build_model("cnn", 10, (1, 28, 28))
    bottom, top = model.split()
    x = torch.zeros(1, 1, 28, 28)
    assert count_flops(bottom, x) + count_flops(top, bottom(x)) == count_flops(model, x)
    # conv1: 28*28 outputs * 32 channels * 5*5 taps * 2
    assert count_flops(bottom[0], x) == 28 * 28 * 32 * 25 * 2


def test_bytes_are_fp32_parameters_and_tensor_sizes():
    layer = nn.Linear(10, 20)
    assert model_bytes(layer) == 4 * (10 * 20 + 20)
    bn = nn.BatchNorm1d(8)
    assert model_bytes(bn, include_buffers=True) == 4 * (8 + 8 + 8 + 8 + 1)
    assert tensor_bytes(torch.zeros(3, 5)) == 60
    assert tensor_bytes(torch.zeros(3, 5, dtype=torch.float16)) == 30
