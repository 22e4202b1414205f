"""The model to prune and its data: the pre-trained pydoc LM or a local Llama-style checkpoint.

Data (ours): the corpus is split as the pre-training split it (the last 10% held out). The
calibration set is ``calibration_size`` windows of ``seq_len`` tokens drawn at seeded random
offsets of the training split; LoRA recovery also trains on the training split; perplexity and
the next-word choice task use only the held-out split (ml.eval.lm).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ml.models.hf_llama import HFTokenizer, load_llama
from ml.data.text import ByteTokenizer, SequenceDataset, load_corpus, train_val_split
from ml.eval.lm import ChoiceItem, next_word_choice_task
from ml.method_run import generator
from ml.models.pretrained import DEFAULT_CONFIG, VAL_FRACTION, pretrained_lm
from ml.models.transformer import DecoderConfig, DecoderLM

#: Pre-trained model sizes on the corpus: ``small`` is the shared default of ml.models.pretrained
#: (~0.9 M parameters); ``tiny`` (~70 k) is for tests and quick checks.
MODEL_SIZES = {
    "small": DEFAULT_CONFIG,
    "tiny": DecoderConfig(vocab_size=256, d_model=32, n_layers=4, n_heads=2, d_ff=96,
                          max_seq_len=32, positional="rope"),
}


@dataclass
class Source:
    """A dense model (CPU, eval mode) with its tokenizer and data splits."""

    model: DecoderLM
    tokenizer: object
    train_tokens: torch.Tensor
    val_tokens: torch.Tensor
    train_text: str
    val_text: str
    rms_norm_eps: float = 1e-6
    info: dict = field(default_factory=dict)


def load_source(corpus: str, checkpoint: str | None, model_size: str, pretrain_steps: int,
                seed: int) -> Source:
    """The model to prune: ``checkpoint`` (a local Hugging Face Llama folder) if given, else the
    byte-level LM pre-trained on ``corpus`` (cached under ``$ESTUARY_DATA_DIR/models``)."""
    if checkpoint:
        folder = Path(checkpoint).expanduser()
        model, eps = load_llama(folder)
        tokenizer = HFTokenizer(folder)
        train_text, val_text = train_val_split(load_corpus(corpus), VAL_FRACTION)
        return Source(model, tokenizer, tokenizer.encode(train_text),
                      tokenizer.encode(val_text), train_text, val_text, eps,
                      {"checkpoint": str(folder)})
    model, tokenizer, info = pretrained_lm(corpus, cfg=MODEL_SIZES[model_size],
                                           steps=pretrain_steps, seed=seed)
    tokens = tokenizer.encode(load_corpus(corpus))
    train, val = train_val_split(tokens, VAL_FRACTION)
    return Source(model, tokenizer, train, val, tokenizer.decode(train), tokenizer.decode(val),
                  1e-6, {k: info[k] for k in ("val_perplexity", "unigram_perplexity", "path",
                                              "cached") if k in info})


def calibration_set(train_tokens: torch.Tensor, size: int, seq_len: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` [size, seq_len]: random training windows and their next tokens."""
    return SequenceDataset(train_tokens, seq_len).sample_batch(size, generator(seed, "calibration"))


def choice_task(source: Source, items: int, choices: int, context_chars: int,
                seed: int) -> list[ChoiceItem]:
    """The next-word choice task on the held-out text (ml.eval.lm.next_word_choice_task)."""
    return next_word_choice_task(source.train_text, source.val_text, source.tokenizer,
                                 items=items, choices=choices, context_chars=context_chars,
                                 seed=seed)


def is_byte_level(tokenizer: object) -> bool:
    return isinstance(tokenizer, ByteTokenizer)
