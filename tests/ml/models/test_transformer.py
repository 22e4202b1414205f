"""The decoder LM: KV-cache decoding equals the full pass; pruned models keep running."""
import pytest
import torch

from ml.models.transformer import (
    DecoderConfig, DecoderLM, cache_length, lm_loss, truncate_cache,
)


def tiny(positional="rope", **kw):
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=40, d_model=32, n_layers=3, n_heads=4, d_ff=48,
                        max_seq_len=32, positional=positional, **kw)
    return DecoderLM(cfg).eval()


@pytest.mark.parametrize("positional", ["rope", "learned"])
def test_incremental_decoding_with_the_cache_equals_the_full_forward(positional):
    model = tiny(positional)
    idx = torch.randint(0, 40, (2, 12))
    full, _ = model(idx)
    logits, past = model(idx[:, :5], use_cache=True)
    chunks = [logits]
    logits, past = model(idx[:, 5:9], past_key_values=past, use_cache=True)  # a chunk of 4
    chunks.append(logits)
    for t in range(9, 12):  # then one token at a time
        logits, past = model(idx[:, t:t + 1], past_key_values=past, use_cache=True)
        chunks.append(logits)
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache_length(past) == 12


def test_truncated_cache_continues_like_the_accepted_prefix():
    model = tiny()
    idx = torch.randint(0, 40, (1, 10))
    _, past = model(idx, use_cache=True)  # e.g. 6 accepted + 4 rejected draft tokens
    past = truncate_cache(past, 6)
    logits, _ = model(idx[:, 6:7], past_key_values=past, use_cache=True)
    full, _ = model(idx[:, :7])
    torch.testing.assert_close(logits[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)


def test_piecewise_submodels_compose_to_the_model():
    model = tiny()
    idx = torch.randint(0, 40, (2, 8))
    h = model.embed_tokens(idx)
    h, _ = model.forward_blocks(h, 0, 1)  # input submodel (device)
    h, _ = model.forward_blocks(h, 1, 2)  # middle submodel (cloud)
    h, _ = model.forward_blocks(h, 2, 3)  # output submodel (device)
    torch.testing.assert_close(model.logits_from_hidden(h), model(idx)[0])


def test_pruned_heads_channels_and_blocks_still_run_and_rebuild():
    model = tiny()
    idx = torch.randint(0, 40, (2, 8))
    model.blocks[0].attn.prune_heads([1, 3])
    model.blocks[1].mlp.prune_channels(range(0, 48, 2))
    model.blocks[2].attn.prune_heads([])  # every head gone: attention adds nothing
    del model.blocks[1]
    assert model.blocks[0].attn.n_heads == 2 and model.blocks[0].attn.q_proj.weight.shape == (16, 32)
    logits, past = model(idx, use_cache=True)
    assert logits.shape == (2, 8, 40) and len(past) == 2
    assert model.architecture()["blocks"] == [{"n_heads": 2, "d_ff": 48}, {"n_heads": 0, "d_ff": 48}]
    rebuilt = DecoderLM.from_architecture(model.architecture())
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(idx)[0], logits)


def test_pruning_head_keeps_the_other_heads_outputs():
    model = tiny()
    attn = model.blocks[0].attn
    with torch.no_grad():  # make head 2 contribute nothing, then remove it
        attn.o_proj.weight[:, 16:24] = 0
    idx = torch.randint(0, 40, (1, 6))
    before, _ = model(idx)
    attn.prune_heads([0, 1, 3])
    torch.testing.assert_close(model(idx)[0], before, atol=1e-5, rtol=1e-5)


def test_tied_embeddings_share_one_matrix_and_loss_is_near_log_vocab():
    model = tiny(tie_embeddings=True)
    assert model.head.weight is model.embed.weight
    idx = torch.randint(0, 40, (2, 8))
    loss = lm_loss(model(idx)[0][:, :-1], idx[:, 1:])
    assert abs(loss.item() - torch.log(torch.tensor(40.0)).item()) < 0.2


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        DecoderConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="max_seq_len"):
        tiny("learned")(torch.zeros(1, 33, dtype=torch.long))
