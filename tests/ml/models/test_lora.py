"""LoRA layers: a fresh adapter changes nothing, merging is exact, only adapters train."""
import pytest
import torch
from torch import nn

from ml.models.lora import (
    LoRALinear, apply_lora, load_lora_state_dict, lora_state_dict, remove_lora,
)
from ml.models.transformer import DecoderConfig, DecoderLM


def small_lm():
    torch.manual_seed(0)
    return DecoderLM(DecoderConfig(vocab_size=30, d_model=16, n_layers=2, n_heads=2, d_ff=24,
                                   max_seq_len=16)).eval()


def trained_lora(rank=4):
    torch.manual_seed(1)
    layer = LoRALinear(nn.Linear(8, 6), rank=rank, alpha=8)
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def test_zero_initialised_lora_equals_the_base_model():
    model = small_lm()
    idx = torch.randint(0, 30, (2, 7))
    before, _ = model(idx)
    wrapped = apply_lora(model, ("q_proj", "v_proj"), rank=4, alpha=8)
    assert [name for name, _ in wrapped] == ["blocks.0.attn.q_proj", "blocks.0.attn.v_proj",
                                             "blocks.1.attn.q_proj", "blocks.1.attn.v_proj"]
    torch.testing.assert_close(model(idx)[0], before, rtol=0, atol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{m}" for n, _ in wrapped for m in "AB"}


def test_merge_matches_the_unmerged_output_and_unmerge_restores_the_weight_exactly():
    layer = trained_lora()
    x = torch.randn(5, 8)
    original = layer.base.weight.clone()
    unmerged = layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), unmerged, atol=1e-5, rtol=1e-5)
    assert not torch.equal(layer.base.weight, original)
    layer.unmerge()
    assert torch.equal(layer.base.weight, original)
    assert torch.equal(layer(x), unmerged)


def test_resize_rank_truncates_to_the_top_components_and_growing_changes_nothing():
    layer = trained_lora(rank=4)
    x = torch.randn(3, 8)
    top2 = layer.base(x) + x @ layer.lora_A[:2].T @ layer.lora_B[:, :2].T * layer.scaling
    layer.resize_rank(2)
    torch.testing.assert_close(layer(x), top2)
    layer.resize_rank(6)
    assert layer.rank == 6
    torch.testing.assert_close(layer(x), top2)


def test_lora_state_round_trips_and_mismatches_are_named():
    source, target = small_lm(), small_lm()
    apply_lora(source, ("q_proj",), rank=2, alpha=4)
    apply_lora(target, ("q_proj",), rank=2, alpha=4)
    with torch.no_grad():
        source.blocks[0].attn.q_proj.lora_B.fill_(0.5)
    state = lora_state_dict(source)
    assert set(state) == {"blocks.0.attn.q_proj.lora_A", "blocks.0.attn.q_proj.lora_B",
                          "blocks.1.attn.q_proj.lora_A", "blocks.1.attn.q_proj.lora_B"}
    load_lora_state_dict(target, state)
    idx = torch.randint(0, 30, (1, 5))
    torch.testing.assert_close(target(idx)[0], source(idx)[0])
    with pytest.raises(KeyError, match="missing"):
        load_lora_state_dict(target, {})


def test_remove_lora_merges_into_plain_linears_that_can_be_pruned():
    model = small_lm()
    apply_lora(model, ("q_proj", "v_proj"), rank=2, alpha=4)
    with torch.no_grad():
        model.blocks[0].attn.v_proj.lora_B.fill_(0.1)
    idx = torch.randint(0, 30, (1, 5))
    expected, _ = model(idx)
    remove_lora(model)
    assert type(model.blocks[0].attn.v_proj) is nn.Linear
    torch.testing.assert_close(model(idx)[0], expected, atol=1e-5, rtol=1e-5)
    model.blocks[0].attn.prune_heads([0])
    assert model(idx)[0].shape == (1, 5, 30)
