"""The long-context extension: it learns the long positions the base model never saw, and caches."""
import math

import pytest
import torch

from ml.data.text import ByteTokenizer, load_corpus, train_val_split
from ml.models.long_context import bucket_means, long_context_lm, position_losses
from ml.models.pretrained import VAL_FRACTION, pretrained_lm
from ml.models.transformer import DecoderConfig

# Pre-trained on 32-byte windows, extended to 256-byte windows.
TINY = DecoderConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=32)
SETTINGS = {"cfg": TINY, "base_steps": 150, "context": 256, "steps": 40, "batch_size": 8,
            "lr": 1e-2, "base_lr": 1e-2, "eval_windows": 16}


def test_extension_beats_the_base_model_at_long_positions_and_is_cached(tmp_path):
    model, _, info = long_context_lm("pydoc", cache_dir=tmp_path, **SETTINGS)
    assert not info["cached"] and info["context"] == 256 and model.cfg.max_seq_len == 256
    # Far beyond the base model's 32-byte training windows the extension is clearly better.
    base_long, ext_long = info["base_ppl_128-256"], info["ppl_128-256"]
    assert ext_long < 0.85 * base_long
    # The gain is at the positions the base never saw, not just more training: at the seen
    # positions (< 32) the two are close.
    base, _, _ = pretrained_lm("pydoc", cfg=TINY, steps=150, lr=1e-2, cache_dir=tmp_path)
    _, val = train_val_split(ByteTokenizer().encode(load_corpus("pydoc")), VAL_FRACTION)
    seen = {name: position_losses(m, val, 256, (0, 32), 16)["0-32"]
            for name, m in (("base", base), ("ext", model))}
    assert math.log(base_long / ext_long) > 2 * abs(seen["base"] - seen["ext"])
    assert info["val_perplexity"] < info["unigram_perplexity"]
    again, _, cached = long_context_lm("pydoc", cache_dir=tmp_path, **SETTINGS)
    assert cached["cached"] and cached["path"] == info["path"]
    assert cached["base_path"] == info["base_path"] != info["path"]
    idx = torch.randint(0, 256, (1, 300))
    assert torch.equal(again(idx)[0], model(idx)[0])


def test_bucket_means_and_validation(tmp_path):
    means = bucket_means(torch.arange(10, dtype=torch.float64), (0, 4, 8, 2048))
    assert means == {"0-4": 1.5, "4-8": 5.5, "8-10": 8.5}
    with pytest.raises(ValueError, match="steps"):
        long_context_lm("pydoc", cfg=TINY, steps=0, cache_dir=tmp_path)
    learned = DecoderConfig(vocab_size=256, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                            max_seq_len=32, positional="learned")
    with pytest.raises(ValueError, match="rotary"):
        long_context_lm("pydoc", cfg=learned, base_steps=5, steps=1, cache_dir=tmp_path)
