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


def test_the_layer_count_agrees_with_torchs_counter_on_every_model():
    import typing

    from torch.utils.flop_counter import FlopCounterMode

    from ml.fl.config import ModelName
    from ml.models.flops import layer_flops

    counted = set()
    for name in typing.get_args(ModelName):
        for shape in [(1, 28, 28), (3, 32, 32)]:
            model = build_model(name, 10, shape).eval()
            x = torch.zeros(2, *shape)
            with torch.no_grad():
                ours = layer_flops(model, (x,))
                with FlopCounterMode(display=False) as counter:
                    model(x)
            if ours is not None:
                counted.add(name)
                assert ours == counter.get_total_flops(), (name, shape)
            bottom, _ = model.split()
            with torch.no_grad():
                half = layer_flops(bottom, (x,))
                with FlopCounterMode(display=False) as counter:
                    bottom(x)
            assert half in (None, counter.get_total_flops()), (name, shape)
    # the models FedAvg's benches use take the fast count (no torch._dynamo import)
    assert {"cnn", "cnn-small", "alexnet"} <= counted
    # a layer it does not know falls back to torch's counter
    assert layer_flops(nn.Sequential(nn.Linear(4, 4), nn.GELU()), (torch.zeros(1, 4),)) is None
