"""The pre-trained LM trains once, caches its checkpoint and loads it the second time."""
import torch

from ml.models.pretrained import pretrained_lm
from ml.models.transformer import DecoderConfig

TINY = DecoderConfig(vocab_size=256, d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=32)


def test_trains_then_loads_the_cached_checkpoint(tmp_path):
    model, tokenizer, info = pretrained_lm("pydoc", cfg=TINY, steps=60, lr=1e-2, cache_dir=tmp_path)
    assert not info["cached"] and info["steps"] == 60
    assert info["val_perplexity"] < info["unigram_perplexity"]  # 60 steps already beat unigram
    again, _, info2 = pretrained_lm("pydoc", cfg=TINY, steps=60, lr=1e-2, cache_dir=tmp_path)
    assert info2["cached"] and info2["path"] == info["path"]
    assert info2["val_perplexity"] == info["val_perplexity"]
    idx = tokenizer.encode("The assert statement").unsqueeze(0)
    assert torch.equal(again(idx)[0], model(idx)[0])


def test_custom_corpus_file_gets_its_own_checkpoint(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcabcabd " * 400, encoding="utf-8")
    _, _, info = pretrained_lm(str(corpus), cfg=TINY, steps=60, lr=1e-2, cache_dir=tmp_path)
    assert info["val_perplexity"] < info["unigram_perplexity"]
    corpus.write_text("xyzxyzxyw " * 400, encoding="utf-8")
    _, _, changed = pretrained_lm(str(corpus), cfg=TINY, steps=60, lr=1e-2, cache_dir=tmp_path)
    assert not changed["cached"] and changed["path"] != info["path"]
