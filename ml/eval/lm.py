"""Language-model evaluation: held-out perplexity and a zero-shot next-word choice task.

The pruning papers score a compressed LLM by WikiText2 perplexity and by zero-shot multiple
choice (lm-eval-harness: BoolQ, PIQA, HellaSwag, ...). Offline we build the same two kinds of
measure from the local corpus (ours):

- **Perplexity**: ``exp`` of the mean next-token cross-entropy over non-overlapping windows of the
  held-out split (:func:`ml.models.pretrained.evaluate_perplexity`).
- **Next-word choice**: an item is a context (the ``context_chars`` characters of held-out text
  before a word) and ``choices`` candidate words of the *same number of tokens* as the true
  next word (the same length in bytes with the byte tokenizer): the true word and distractors
  drawn from the training split's words of that token count, weighted by their frequency. The
  model picks the candidate with the highest total log-probability given the context, as
  lm-eval-harness scores multiple choice. Equal token counts make raw and length-normalised
  scores agree, so there is no length bias; chance is ``1 / choices``.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ml.data.text import Tokenizer
from ml.models.pretrained import evaluate_perplexity

_WORD = re.compile(r"(?<![A-Za-z])[A-Za-z]+(?![A-Za-z])")


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice question: ``choices[answer]`` is the word that really follows."""

    context: torch.Tensor  # [context tokens]
    choices: torch.Tensor  # [choices, word tokens]
    answer: int


def held_out_perplexity(model: nn.Module, tokens: torch.Tensor, seq_len: int,
                        batch_size: int = 64, max_windows: int | None = None) -> float:
    """Perplexity of ``model`` over non-overlapping ``seq_len`` windows of ``tokens``.

    ``max_windows`` keeps only the first windows (a cheaper, still deterministic estimate).
    """
    if max_windows is not None:
        tokens = tokens[: max_windows * seq_len + 1]
    device = next(model.parameters()).device
    return math.exp(evaluate_perplexity(model, tokens.to(device), seq_len, batch_size))


def next_word_choice_task(train_text: str, eval_text: str, tokenizer: Tokenizer, *,
                          items: int = 500, choices: int = 4, context_chars: int = 96,
                          min_word_len: int = 3, max_word_len: int = 16,
                          seed: int = 0, attach_space: bool = False) -> list[ChoiceItem]:
    """Build up to ``items`` next-word questions from ``eval_text`` (see the module docstring).

    Distractors come from ``train_text``; words with fewer than ``choices - 1`` other training
    words of their length are skipped. Deterministic for a given ``seed``.

    ``attach_space`` (for subword tokenizers whose tokens carry their leading space, as GPT-2's
    byte-level BPE): a word that follows a space is asked with that space, as ``" word"``, and
    the context stops before it, so the context never ends in a lone space token the model has
    rarely seen; its distractors are training words that also followed a space.
    """
    if choices < 2:
        raise ValueError(f"choices must be >= 2, got {choices}")
    if not 1 <= min_word_len <= max_word_len:
        raise ValueError("need 1 <= min_word_len <= max_word_len")
    # Candidates of one question share their token count (one batched forward scores them);
    # with a byte tokenizer that is their length, with a subword one it is not.
    token_counts: dict[str, int] = {}

    def tokens_in(form: str) -> int:
        if form not in token_counts:
            token_counts[form] = len(tokenizer.encode(form))
        return token_counts[form]

    def prefix(text: str, start: int) -> str:
        return " " if attach_space and start > 0 and text[start - 1] == " " else ""

    by_length: dict[tuple[str, int], Counter] = defaultdict(Counter)
    for match in _WORD.finditer(train_text):
        word = match.group()
        if min_word_len <= len(word) <= max_word_len:
            form = prefix(train_text, match.start()) + word
            by_length[(form[:-len(word)], tokens_in(form))][form] += 1
    pools = {key: (list(counts), np.array(list(counts.values()), dtype=np.float64))
             for key, counts in by_length.items()}

    def key_of(form: str, word: str) -> tuple[str, int]:
        return form[:-len(word)], tokens_in(form)

    def has_distractors(form: str, word: str) -> bool:
        key = key_of(form, word)
        words = pools.get(key, ((), None))[0]
        return len(words) - (form in by_length[key]) >= choices - 1

    spots = [m for m in _WORD.finditer(eval_text)
             if m.start() >= context_chars and min_word_len <= len(m.group()) <= max_word_len
             and has_distractors(prefix(eval_text, m.start()) + m.group(), m.group())]
    rng = np.random.default_rng(seed)
    if len(spots) > items:
        spots = [spots[i] for i in sorted(rng.choice(len(spots), size=items, replace=False))]
    task = []
    for match in spots:
        word = match.group()
        form = prefix(eval_text, match.start()) + word
        key = key_of(form, word)
        words, counts = pools[key]
        weights = counts.copy()
        if form in by_length[key]:
            weights[words.index(form)] = 0.0
        picked = rng.choice(len(words), size=choices - 1, replace=False, p=weights / weights.sum())
        candidates = [form] + [words[i] for i in picked]
        order = rng.permutation(choices)
        encoded = torch.stack([tokenizer.encode(candidates[i]) for i in order])
        start = match.start() - (len(form) - len(word))
        context = tokenizer.encode(eval_text[match.start() - context_chars:start])
        task.append(ChoiceItem(context=context, choices=encoded,
                               answer=int(np.flatnonzero(order == 0)[0])))
    return task


@torch.no_grad()
def choice_accuracy(model: nn.Module, task: list[ChoiceItem], batch_size: int = 256) -> float:
    """Share of ``task``'s items where ``model`` gives the true word the highest log-probability.

    Items with the same context and word lengths are scored together, ``batch_size`` sequences
    (item x choice) per forward pass.
    """
    if not task:
        raise ValueError("the task has no items")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    groups: dict[tuple[int, int], list[ChoiceItem]] = defaultdict(list)
    for item in task:
        groups[(len(item.context), item.choices.shape[1])].append(item)
    correct = 0
    per_batch = max(1, batch_size // task[0].choices.shape[0])
    for (ctx_len, word_len), group in sorted(groups.items()):
        for start in range(0, len(group), per_batch):
            chunk = group[start:start + per_batch]
            n_choices = chunk[0].choices.shape[0]
            seqs = torch.cat([torch.cat([item.context.expand(n_choices, -1), item.choices], dim=1)
                              for item in chunk]).to(device)
            logits = model(seqs[:, :-1])[0].float()
            # The word's tokens are predicted from positions ctx_len - 1 ... end - 1.
            logp = F.log_softmax(logits[:, ctx_len - 1:], dim=-1)
            targets = seqs[:, ctx_len:]
            scores = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(-1)
            picks = scores.view(len(chunk), n_choices).argmax(dim=1).cpu()
            correct += sum(int(p) == item.answer for p, item in zip(picks, chunk))
    model.train(was_training)
    return correct / len(task)
