"""The two tasks of FedSpine's pretrain-then-fine-tune, and the classifier on the frozen base.

1. **Pre-training (upstream)**: next-byte language modelling on the pydoc corpus
   (:func:`ml.models.pretrained.pretrained_lm`: the first 90 % of CPython's ``pydoc_data.topics``).
2. **Fine-tuning (downstream, ours)**: a byte-window classification task, one of
   :data:`TASKS`. The default, ``source-kinds``, labels a ``seq_len``-byte window by the kind of
   file it was cut from (:data:`SOURCE_KINDS`: English prose, Python source, C header, reST
   markup, decimal test vectors), all of it shipped with the Python install and scikit-learn.
   ``pydoc-topics`` (the first design) labels a pydoc window by its topic group; it is barely
   learnable by this base (central LoRA 44.5 %), hence the default changed.
   The LM never saw these labels; the classification head and the LoRA adapters are new.

:class:`TopicClassifier` puts a linear head on the mean-pooled final hidden states of the frozen
decoder (its LM head is not used).
"""
from __future__ import annotations

import importlib.util
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ml.data.text import ByteTokenizer
from ml.models.pretrained import pretrained_lm
from ml.models.transformer import DecoderConfig, DecoderLM

#: Downstream classes (ours): every pydoc topic belongs to exactly one group.
TOPIC_GROUPS: dict[str, tuple[str, ...]] = {
    "statements": (
        "assert", "assignment", "async", "augassign", "await", "break", "class", "compound",
        "continue", "del", "else", "exceptions", "for", "function", "global", "if", "import",
        "nonlocal", "pass", "raise", "return", "try", "while", "with", "yield"),
    "expressions": (
        "atom-identifiers", "atom-literals", "attribute-references", "binary", "bitwise",
        "booleans", "calls", "comparisons", "conversions", "dict", "exprlists", "in", "lambda",
        "lists", "operator-summary", "power", "shifting", "slicings", "subscriptions", "unary"),
    "data-model": (
        "attribute-access", "callable-types", "context-managers", "customization",
        "numeric-types", "objects", "sequence-types", "specialattrs", "specialnames", "types"),
    "builtin-types": (
        "bltin-code-objects", "bltin-ellipsis-object", "bltin-null-object", "bltin-type-objects",
        "string-methods", "truth", "typesfunctions", "typesmapping", "typesmethods",
        "typesmodules", "typesseq", "typesseq-mutable"),
    "lexical-execution": (
        "debugger", "dynamic-features", "execmodel", "floating", "formatstrings", "id-classes",
        "identifiers", "imaginary", "integers", "naming", "numbers", "strings"),
}
CLASSES: tuple[str, ...] = tuple(TOPIC_GROUPS)

#: The pre-trained bases (ours): ``small`` pre-trains in ~20 s on one CPU thread and is cached;
#: ``tiny`` is for tests; ``core`` is ml.models.pretrained's default (~0.9 M parameters).
BASES: dict[str, tuple[DecoderConfig, int]] = {
    "tiny": (DecoderConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                           max_seq_len=64), 60),
    "small": (DecoderConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, d_ff=192,
                            max_seq_len=64), 300),
    "core": (DecoderConfig(vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=384,
                           max_seq_len=128), 600),
}


def _pydoc_texts() -> list[bytes]:
    from pydoc_data.topics import topics
    return [topics[name].encode() for name in sorted(topics)]


def _files(root: Path, pattern: str, recursive: bool = False) -> list[bytes]:
    paths = sorted(root.rglob(pattern) if recursive else root.glob(pattern))
    return [p.read_bytes() for p in paths]


def _sklearn_dir() -> Path:
    spec = importlib.util.find_spec("sklearn")  # found without importing sklearn (slow)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the source-kinds task needs scikit-learn's reST dataset notes")
    return Path(list(spec.submodule_search_locations)[0])


#: Classes of the ``source-kinds`` task (ours): a name and the documents (bytes) of that kind,
#: all offline. The stdlib top-level modules carry docstrings and comments (English), so prose
#: and Python overlap, as do reST notes and prose; C headers carry comments too.
SOURCE_KINDS: dict[str, Callable[[], list[bytes]]] = {
    "prose": _pydoc_texts,
    "python": lambda: _files(Path(sysconfig.get_paths()["stdlib"]), "*.py"),
    "c-header": lambda: _files(Path(sysconfig.get_paths()["include"]), "*.h", recursive=True),
    "rest": lambda: _files(_sklearn_dir() / "datasets" / "descr", "*.rst"),
    "test-vectors": lambda: _files(Path(sysconfig.get_paths()["stdlib"]), "*.decTest",
                                   recursive=True),
}
#: Windows kept per class at most (ours): balances the classes and bounds memory.
SOURCE_KIND_CAP = 1500


@dataclass(frozen=True)
class TopicData:
    """Byte windows ``x`` [N, seq_len] with class labels ``y`` [N], split into train and test."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...] = field(default=CLASSES)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def topic_windows(seq_len: int) -> tuple[torch.Tensor, np.ndarray]:
    """Every non-overlapping ``seq_len``-byte window of every topic, with its group label."""
    from pydoc_data.topics import topics

    group_of = {t: g for g, names in enumerate(TOPIC_GROUPS.values()) for t in names}
    tokenizer = ByteTokenizer()
    xs, ys = [], []
    for name in sorted(topics):
        if name not in group_of:  # a topic added by a newer Python: not part of the task
            continue
        ids = tokenizer.encode(topics[name])
        n = len(ids) // seq_len
        if n:
            xs.append(ids[:n * seq_len].view(n, seq_len))
            ys.extend([group_of[name]] * n)
    return torch.cat(xs), np.asarray(ys, dtype=np.int64)


def source_kind_windows(seq_len: int, cap: int = SOURCE_KIND_CAP) -> tuple[torch.Tensor,
                                                                           np.ndarray]:
    """Non-overlapping ``seq_len``-byte windows of every document of each kind in
    :data:`SOURCE_KINDS` (a fixed random ``cap`` of them per kind), with the kind's index."""
    xs, ys = [], []
    for label, (kind, documents) in enumerate(SOURCE_KINDS.items()):
        rows = [np.frombuffer(d[:len(d) // seq_len * seq_len], dtype=np.uint8)
                .reshape(-1, seq_len) for d in documents() if len(d) >= seq_len]
        if not rows:
            raise RuntimeError(f"source-kinds: no {kind!r} files found in this installation")
        windows = np.concatenate(rows)
        keep = np.random.default_rng(label).permutation(len(windows))[:cap]
        xs.append(torch.from_numpy(windows[np.sort(keep)].astype(np.int64)))
        ys.extend([label] * len(keep))
    return torch.cat(xs), np.asarray(ys, dtype=np.int64)


#: The downstream tasks: name -> (window builder, class names).
TASKS: dict[str, tuple[Callable[[int], tuple[torch.Tensor, np.ndarray]], tuple[str, ...]]] = {
    "source-kinds": (source_kind_windows, tuple(SOURCE_KINDS)),
    "pydoc-topics": (topic_windows, CLASSES),
}


def load_topic_data(seq_len: int = 64, test_fraction: float = 0.15, seed: int = 0,
                    max_test: int | None = 600, task: str = "source-kinds") -> TopicData:
    """The downstream data set ``task`` of :data:`TASKS`: a stratified random ``test_fraction``
    of windows is held out (at most ``max_test``, to keep evaluation cheap)."""
    windows, classes = TASKS[task]
    x, y = windows(seq_len)
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(y == c))
        test_idx.append(idx[:max(1, int(round(len(idx) * test_fraction)))])
    test = np.concatenate(test_idx)
    if max_test is not None and len(test) > max_test:
        test = rng.choice(test, size=max_test, replace=False)
    mask = np.ones(len(y), dtype=bool)
    mask[test] = False
    train = np.flatnonzero(mask)
    yt = torch.from_numpy(y)
    return TopicData(x[train], yt[train], x[np.sort(test)], yt[np.sort(test)], classes)


def load_base(name: str = "small", cache_dir: str | Path | None = None) -> tuple[DecoderLM, dict]:
    """The pre-trained decoder ``name`` of :data:`BASES` (trained once, then cached).

    It always comes from the cache, so the caller's global RNG moves the same whether or not
    this call pre-trained it: a run (or a rank of a distributed run) that finds the cache
    cold draws the same initial adapters and head as one that finds it warm."""
    cfg, steps = BASES[name]
    with torch.random.fork_rng():  # pre-training (cold cache) draws apart from the caller
        pretrained_lm("pydoc", cfg=cfg, steps=steps, batch_size=16, cache_dir=cache_dir)
    model, _, info = pretrained_lm("pydoc", cfg=cfg, steps=steps, batch_size=16,
                                   cache_dir=cache_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info


class TopicClassifier(nn.Module):
    """``head(mean_t norm(blocks(embed(x))))``: a linear classifier on the decoder's features."""

    def __init__(self, decoder: DecoderLM, num_classes: int):
        super().__init__()
        self.decoder = decoder
        self.classifier = nn.Linear(decoder.cfg.d_model, num_classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.decoder.embed_tokens(idx)
        h, _ = self.decoder.forward_blocks(h)
        return self.classifier(self.decoder.norm(h).mean(dim=1))
