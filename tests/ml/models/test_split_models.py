"""Image models cut at every split point give the full model's output, sharing its weights."""
import pytest
import torch

from ml.models import MODELS, build_model

SHAPES = {"cnn": (1, 28, 28), "cnn-small": (1, 8, 8), "alexnet": (3, 32, 32),
          "resnet8": (3, 32, 32), "resnet20": (3, 32, 32), "resnet18": (3, 16, 16),
          "resnet32": (3, 16, 16)}


@pytest.mark.parametrize("name", MODELS)
def test_top_of_bottom_equals_the_full_model_at_every_split_point(name):
    torch.manual_seed(0)
    model = build_model(name, 10, SHAPES[name]).eval()
    x = torch.randn(2, *SHAPES[name])
    full = model(x)
    assert full.shape == (2, 10)
    assert model.default_split in model.split_points
    for point in model.split_points:
        bottom, top = model.split(point)
        torch.testing.assert_close(top(bottom(x)), full, rtol=0, atol=0)


def test_halves_share_parameters_with_the_model():
    model = build_model("cnn", 10, (1, 8, 8))
    bottom, top = model.split()
    with torch.no_grad():
        next(bottom.parameters()).add_(1.0)
    assert next(bottom.parameters()) is next(model.parameters())
    ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in [*bottom.parameters(), *top.parameters()]} == ids


def test_cnn_adapts_to_small_inputs_and_bad_names_are_refused():
    assert build_model("cnn", 3, (1, 8, 8))(torch.zeros(1, 1, 8, 8)).shape == (1, 3)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg99", 10, (3, 32, 32))
    with pytest.raises(ValueError, match="unknown split point 'fc9'"):
        build_model("cnn", 10, (1, 28, 28)).split("fc9")
