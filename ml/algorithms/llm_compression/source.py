"""The model to prune and its data: a pre-trained LM or a local Llama-style checkpoint.

The byte-level sizes (``tiny``, ``small``) come from :func:`ml.models.pretrained.pretrained_lm`
(pre-trained with the run's seed, as before); the deep BPE sizes (``deep-tiny``, ``medium``,
``large``) from :func:`ml.models.pretraining.pretrained_lm_of_size`, pre-trained once with seed 0
(the fixed checkpoint every seed prunes, as the paper prunes one Llama).

Data (ours): the corpus is split as the pre-training split it (byte sizes: the last 10% held
out; deep sizes: every tenth document held out). The
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
from ml.data.images import default_data_dir
from ml.models.pretrained import DEFAULT_CONFIG, VAL_FRACTION, pretrained_lm
from ml.models.pretraining import LM_SIZES, corpus_splits, pretrained_lm_of_size
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


#: Pre-training steps of the byte-level sizes when the config leaves them empty.
BYTE_PRETRAIN_STEPS = 300


def load_source(corpus: str | None, checkpoint: str | None, model_size: str,
                pretrain_steps: int | None, seed: int) -> Source:
    """The model to prune: ``checkpoint`` (a local Hugging Face Llama folder) if given, else the
    LM of ``model_size`` pre-trained on ``corpus`` (its size's corpus when empty; cached under
    ``$ESTUARY_DATA_DIR``)."""
    if model_size in LM_SIZES and not checkpoint:
        model, tokenizer, info = pretrained_lm_of_size(model_size, corpus=corpus,
                                                       steps=pretrain_steps, seed=0)
        splits = corpus_splits(corpus or LM_SIZES[model_size].corpus,
                               LM_SIZES[model_size].vocab_size,
                               default_data_dir() / "tokenizers")
        return Source(model, tokenizer, splits.train_tokens, splits.val_tokens,
                      splits.train_text, splits.val_text, 1e-6,
                      {k: info[k] for k in ("val_perplexity", "unigram_perplexity", "path",
                                            "cached", "params", "size") if k in info})
    corpus = corpus or "pydoc"
    pretrain_steps = pretrain_steps or BYTE_PRETRAIN_STEPS
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
                                 seed=seed, attach_space=not is_byte_level(source.tokenizer))


def is_byte_level(tokenizer: object) -> bool:
    return isinstance(tokenizer, ByteTokenizer)
