"""Checkpoints keep tensors (safetensors) and metadata (JSON) apart and round-trip exactly."""
import json

import pytest
import torch

from ml.models import build_model
from ml.models.checkpoints import load_checkpoint, read_metadata, save_checkpoint
from ml.models.transformer import DecoderConfig, DecoderLM


def test_pruned_decoder_round_trips_without_passing_a_model(tmp_path):
    torch.manual_seed(0)
    model = DecoderLM(DecoderConfig(vocab_size=20, d_model=16, n_layers=2, n_heads=2, d_ff=24,
                                    max_seq_len=8, tie_embeddings=True)).eval()
    model.blocks[1].attn.prune_heads([1])
    path = save_checkpoint(tmp_path / "lm", model, config={"lr": 0.1}, step=7,
                           metrics={"perplexity": 3.5})
    assert path.name == "lm.safetensors" and (tmp_path / "lm.json").is_file()
    assert json.loads((tmp_path / "lm.json").read_text())["step"] == 7

    loaded, meta = load_checkpoint(tmp_path / "lm.safetensors")
    assert meta["metrics"] == {"perplexity": 3.5} and meta["config"] == {"lr": 0.1}
    assert loaded.head.weight is loaded.embed.weight
    idx = torch.randint(0, 20, (1, 6))
    assert torch.equal(loaded.eval()(idx)[0], model(idx)[0])


def test_image_model_loads_into_a_model_of_the_same_shape(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet8", 10, (3, 16, 16)).eval()
    save_checkpoint(tmp_path / "net", model)
    other = build_model("resnet8", 10, (3, 16, 16)).eval()
    load_checkpoint(tmp_path / "net", other)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(other(x), model(x))
    with pytest.raises(ValueError, match="pass a model"):
        load_checkpoint(tmp_path / "net")
    assert read_metadata(tmp_path / "net")["model_class"] == "ResNet"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint metadata"):
        load_checkpoint(tmp_path / "nothing")
