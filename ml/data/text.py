"""Text corpora, tokenizers and next-token data for the language-model methods.

The offline corpus ``pydoc`` is CPython's ``pydoc_data.topics`` (about 466 kB of English
reference text with code), joined in sorted topic order so it is identical on every machine.
The offline corpus ``cpython`` (about 10 MB) is the standard library's sources plus those topics
(:mod:`ml.data.cpython_corpus`).
Any other name is a local UTF-8 text file: a path, or a file name in the data folder
(``$ESTUARY_DATA_DIR``, default ``var/``), so ``load_corpus("tiny-shakespeare.txt")`` reads
``var/tiny-shakespeare.txt``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import torch
from torch.utils.data import Dataset

from ml.data.cpython_corpus import cpython_text, pydoc_text
from ml.data.images import default_data_dir


def load_corpus(name_or_path: str = "pydoc") -> str:
    """The text of corpus ``pydoc`` or ``cpython``, or of the UTF-8 file ``name_or_path``.

    A relative path that does not exist is also looked up in the data folder
    (:func:`ml.data.images.default_data_dir`). ``FileNotFoundError`` says where to put the file.
    """
    if name_or_path == "pydoc":
        return pydoc_text()
    if name_or_path == "cpython":
        return cpython_text()
    path = Path(name_or_path).expanduser()
    candidates = [path]
    if not path.is_absolute():
        candidates.append(default_data_dir().expanduser() / path)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        tried = " or ".join(str(c.resolve()) for c in candidates)
        raise FileNotFoundError(
            f"corpus {name_or_path!r} is neither 'pydoc' nor an existing text file (nor "
            f"'cpython'): put a UTF-8 text file at {tried} (the data folder is "
            f"$ESTUARY_DATA_DIR, default var/), or give the corpus's full path")
    path = found
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"corpus file {path} is not UTF-8 text: {exc}") from None


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> torch.Tensor:
        """1-D int64 token ids."""

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of the ids."""

    def to_dict(self) -> dict:
        """JSON-able description, for :func:`tokenizer_from_dict`."""


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, nothing to fit, every text encodable."""

    vocab_size = 256

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return bytes(int(i) for i in _as_list(ids)).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"kind": "byte"}


class CharTokenizer:
    """Characters as tokens; id 0 stands for any character not seen by :meth:`fit`."""

    UNKNOWN_ID = 0
    UNKNOWN_CHAR = "\ufffd"

    def __init__(self, chars: Sequence[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("chars must be distinct single characters")
        self.chars = list(chars)
        self._ids = {c: i + 1 for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars) + 1

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        """A tokenizer over the sorted distinct characters of ``text``."""
        return cls(sorted(set(text)))

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self._ids.get(c, self.UNKNOWN_ID) for c in text], dtype=torch.long)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return "".join(self.chars[i - 1] if 0 < i <= len(self.chars) else self.UNKNOWN_CHAR
                       for i in _as_list(ids))

    def to_dict(self) -> dict:
        return {"kind": "char", "chars": "".join(self.chars)}


def tokenizer_from_dict(spec: dict) -> ByteTokenizer | CharTokenizer:
    """Rebuild a tokenizer from its :meth:`to_dict` description (a ``bpe`` one is loaded from its
    file, :class:`ml.data.bpe.BPETokenizer`)."""
    if spec.get("kind") == "bpe":
        from ml.data.bpe import BPETokenizer

        return BPETokenizer.from_dict(spec)
    if spec.get("kind") == "byte":
        return ByteTokenizer()
    if spec.get("kind") == "char":
        return CharTokenizer(list(spec["chars"]))
    raise ValueError(f"unknown tokenizer description {spec!r}")


def _as_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]


class SequenceDataset(Dataset):
    """Next-token pairs from a token stream: item i is ``(x, y)`` with ``y = x`` shifted by one.

    Items are consecutive non-overlapping windows of ``seq_len`` tokens (``stride`` = seq_len
    unless given). :meth:`sample_batch` draws windows at random offsets instead (nanoGPT-style).
    """

    def __init__(self, tokens: torch.Tensor, seq_len: int, stride: int | None = None):
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if len(tokens) < seq_len + 1:
            raise ValueError(f"need at least seq_len + 1 = {seq_len + 1} tokens, got {len(tokens)}")
        self.tokens = tokens.long()
        self.seq_len = seq_len
        self.stride = seq_len if stride is None else stride
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")

    def __len__(self) -> int:
        return (len(self.tokens) - self.seq_len - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        start = (i % len(self)) * self.stride
        window = self.tokens[start:start + self.seq_len + 1]
        return window[:-1], window[1:]

    def sample_batch(self, batch_size: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` windows at uniformly random offsets: ``(x, y)`` of shape [B, seq_len]."""
        starts = torch.randint(0, len(self.tokens) - self.seq_len, (batch_size,),
                               generator=generator)
        offsets = torch.arange(self.seq_len + 1)
        windows = self.tokens[starts[:, None] + offsets]
        return windows[:, :-1], windows[:, 1:]


Split = TypeVar("Split", torch.Tensor, str)


def train_val_split(tokens: Split, val_fraction: float = 0.1) -> tuple[Split, Split]:
    """Split a token stream (or a text, before tokenizing it) into ``(train, val)``: the last
    ``val_fraction`` is held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = len(tokens) - int(round(len(tokens) * val_fraction))
    if cut <= 0 or cut >= len(tokens):
        raise ValueError(f"{len(tokens)} tokens are too few for val_fraction={val_fraction}")
    return tokens[:cut], tokens[cut:]


def shard(tokens: torch.Tensor, workers: int, worker: int) -> torch.Tensor:
    """Worker ``worker``'s contiguous share of ``tokens`` (shares differ by at most one token),
    e.g. the data of one region in cross-region training."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not 0 <= worker < workers:
        raise ValueError(f"worker must be in [0, {workers}), got {worker}")
    if len(tokens) < workers:
        raise ValueError(f"cannot shard {len(tokens)} tokens among {workers} workers")
    base, extra = divmod(len(tokens), workers)
    start = worker * base + min(worker, extra)
    return tokens[start:start + base + (1 if worker < extra else 0)]
