"""A byte-level BPE tokenizer trained locally on a corpus (the ``tokenizers`` package), cached.

GPT-2's scheme: text is split by the byte-level pre-tokenizer (a word keeps its leading space,
runs of spaces stay together, so indentation is cheap), and merges are learned from the corpus
by :class:`tokenizers.trainers.BpeTrainer` over its documents in order. Training is
deterministic for a given corpus and vocabulary size (tests check it); the result is saved as
``<data>/tokenizers/bpe-<vocab>-<digest>.json`` (the ``tokenizers`` JSON format, no pickle) and
loaded from there on later calls. Every byte is in the initial alphabet, so any text encodes.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

#: Bump when the training recipe changes (it is part of the cache key).
RECIPE_VERSION = 1


class BPETokenizer:
    """A trained ``tokenizers.Tokenizer`` behind :class:`ml.data.text.Tokenizer`'s interface."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        self.path = Path(path).resolve()
        text = self.path.read_text(encoding="utf-8")
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self._tok = Tokenizer.from_str(text)
        self.vocab_size = self._tok.get_vocab_size()

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self._tok.encode(text).ids, dtype=torch.long)

    def encode_documents(self, documents: Sequence[str], separator: str = "\n\n") -> torch.Tensor:
        """The documents joined by ``separator``, encoded document by document (in parallel);
        equal to ``encode(separator.join(documents))`` up to merges across document edges."""
        sep = self._tok.encode(separator).ids
        ids: list[int] = []
        for i, enc in enumerate(self._tok.encode_batch(list(documents))):
            if i:
                ids.extend(sep)
            ids.extend(enc.ids)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
        return self._tok.decode(ids, skip_special_tokens=False)

    def to_dict(self) -> dict:
        return {"kind": "bpe", "vocab_size": self.vocab_size, "path": str(self.path),
                "sha256": self.sha256}

    @classmethod
    def from_dict(cls, spec: dict) -> BPETokenizer:
        """The tokenizer a :meth:`to_dict` names; ``ValueError`` if its file changed."""
        tokenizer = cls(spec["path"])
        if spec.get("sha256") and tokenizer.sha256 != spec["sha256"]:
            raise ValueError(f"tokenizer file {spec['path']} no longer matches its sha256")
        return tokenizer


def corpus_digest(documents: Sequence[str]) -> str:
    h = hashlib.sha256()
    for doc in documents:
        h.update(doc.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def train_bpe(documents: Sequence[str], vocab_size: int, cache_dir: str | Path,
              log=None) -> BPETokenizer:
    """The byte-level BPE tokenizer of ``vocab_size`` tokens for ``documents``, trained once
    and cached in ``cache_dir`` (a file lock keeps concurrent callers from training twice)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(f"a byte-level BPE needs vocab_size > 256, got {vocab_size}")
    key = hashlib.sha256(json.dumps({"corpus": corpus_digest(documents), "vocab": vocab_size,
                                     "recipe": RECIPE_VERSION}).encode()).hexdigest()[:16]
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bpe-{vocab_size}-{key}.json"
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            if log:
                log(f"training a {vocab_size}-token BPE on {len(documents)} documents")
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                          special_tokens=[])
            tok.train_from_iterator(documents, trainer=trainer, length=len(documents))
            tmp = path.with_suffix(".tmp")
            tmp.write_text(tok.to_str(), encoding="utf-8")
            tmp.replace(path)
    return BPETokenizer(path)


def cached_tokens(tokenizer: BPETokenizer, documents: Sequence[str],
                  cache_dir: str | Path) -> torch.Tensor:
    """``tokenizer.encode_documents(documents)``, cached as ``.npy`` (uint16/int32) beside it."""
    key = hashlib.sha256(f"{corpus_digest(documents)}:{tokenizer.sha256}".encode()).hexdigest()
    path = Path(cache_dir) / f"tokens-{key[:20]}.npy"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.int64))
        ids = tokenizer.encode_documents(documents)
        dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.int32
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, ids.numpy().astype(dtype), allow_pickle=False)
        tmp.replace(path)
    return ids
