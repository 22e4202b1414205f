"""Long-context extension of a pre-trained byte-level LM, cached on disk.

The shared pre-trained LM (:mod:`ml.models.pretrained`) learns on 128-byte windows; far beyond
that its RoPE attention meets distances it never saw and its predictions degenerate. Serving
methods (HAT and its baselines) take prompts of up to 2,048 tokens, so they use this *extension*
stage (ours, in the spirit of the continued pre-training on long sequences that long-context
Llamas get): the cached base model is copied into a config with ``max_seq_len = context`` (the
rotary positions need no new weights) and trained further on random windows of ``context``
bytes of the same training split, AdamW with a short warm-up and cosine decay. The base model,
its config and its cache entry are left untouched (COMP and FedSpine keep using it).

The first call trains and saves ``$ESTUARY_DATA_DIR/models/long-<key>.safetensors`` (+ ``.json``);
the key covers the base checkpoint (whose own key covers corpus, config and pre-training) and
the extension settings. A file lock keeps concurrent callers from training twice.

:func:`position_losses` measures held-out loss by position bucket (``<128``, ``128-512``,
``512-2048`` by default); ``info`` carries it for the base and the extended model.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from ml.data.images import default_data_dir
from ml.data.text import ByteTokenizer, SequenceDataset, load_corpus, train_val_split
from ml.models.checkpoints import load_or_train
from ml.models.pretrained import (DEFAULT_STEPS, VAL_FRACTION, PretrainSettings,
                                  pretrained_lm, train_lm)
from ml.models.transformer import DecoderConfig, DecoderLM

DEFAULT_CONTEXT = 2048
DEFAULT_EXTEND_STEPS = 150
#: Position buckets ``[a, b)`` of the held-out loss report.
POSITION_BUCKETS = (0, 128, 512, 2048)


@dataclass(frozen=True)
class ExtendSettings(PretrainSettings):
    """How the extension trains; part of its cache key."""

    context: int = DEFAULT_CONTEXT
    steps: int = DEFAULT_EXTEND_STEPS
    batch_size: int = 4
    lr: float = 1e-3
    warmup_steps: int = 15


def extension_key(base_path: str, settings: ExtendSettings) -> str:
    """Hex digest naming the extension of base checkpoint ``base_path`` with ``settings``."""
    payload = json.dumps({"base": Path(base_path).name, "settings": asdict(settings),
                          "version": 1}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


@torch.no_grad()
def per_position_loss(model: DecoderLM, tokens: torch.Tensor, context: int,
                      max_windows: int | None = None, batch_size: int = 4) -> torch.Tensor:
    """Next-token loss (nats) of ``model`` at each position ``[context]`` of a window, averaged
    over the first ``max_windows`` non-overlapping ``context``-token windows of ``tokens``."""
    data = SequenceDataset(tokens, context)
    windows = len(data) if max_windows is None else min(len(data), max_windows)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros(context, dtype=torch.float64)
    for start in range(0, windows, batch_size):
        pairs = [data[i] for i in range(start, min(start + batch_size, windows))]
        x = torch.stack([p[0] for p in pairs]).to(device)
        y = torch.stack([p[1] for p in pairs]).to(device)
        loss = F.cross_entropy(model(x)[0].transpose(1, 2), y, reduction="none")  # [B, T]
        total += loss.sum(0).double().cpu()
    model.train(was_training)
    return total / windows


def bucket_means(per_position: torch.Tensor,
                 buckets: Sequence[int] = POSITION_BUCKETS) -> dict[str, float]:
    """Mean of ``per_position`` over each bucket ``[a, b)``: ``{"0-128": ..., ...}``; buckets
    are clipped to its length and dropped when empty."""
    out = {}
    for a, b in zip(buckets[:-1], buckets[1:]):
        b = min(b, len(per_position))
        if a < b:
            out[f"{a}-{b}"] = float(per_position[a:b].mean())
    return out


def position_losses(model: DecoderLM, tokens: torch.Tensor, context: int,
                    buckets: Sequence[int] = POSITION_BUCKETS,
                    max_windows: int | None = None) -> dict[str, float]:
    """Held-out loss (nats) by position bucket: :func:`bucket_means` of
    :func:`per_position_loss`."""
    return bucket_means(per_position_loss(model, tokens, context, max_windows), buckets)


def long_context_lm(corpus: str = "pydoc", cfg: DecoderConfig | None = None,
                    base_steps: int = DEFAULT_STEPS, context: int = DEFAULT_CONTEXT,
                    steps: int = DEFAULT_EXTEND_STEPS, seed: int = 0,
                    cache_dir: str | Path | None = None, batch_size: int = 4, lr: float = 1e-3,
                    base_lr: float = 3e-3, eval_windows: int | None = 32
                    ) -> tuple[DecoderLM, ByteTokenizer, dict]:
    """Return ``(model, tokenizer, info)``: the pre-trained LM (``pretrained_lm(corpus, cfg,
    base_steps, seed, lr=base_lr)``, cached) trained ``steps`` more steps on ``context``-byte
    windows (cached too).

    ``info`` has ``val_loss``/``val_perplexity`` (held-out, ``context`` windows), the held-out
    perplexity by position bucket of the extended model (``ppl_<a>-<b>``) and of the base
    model (``base_ppl_<a>-<b>``) over at most ``eval_windows`` windows, the base model's own
    ``base_val_perplexity`` (on its 128-byte windows), ``unigram_perplexity``,
    ``train_time_s``, ``train_cpu_s``, ``steps``, ``context``, ``params``, ``base_path``,
    ``path`` and ``cached``. The model is returned in eval mode.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if context < 2:
        raise ValueError(f"context must be >= 2, got {context}")
    base, tokenizer, base_info = pretrained_lm(corpus, cfg, base_steps, seed, cache_dir, lr=base_lr)
    if base.cfg.positional != "rope":
        raise ValueError("only a rotary-position LM extends to a longer context without new "
                         f"weights; this one has {base.cfg.positional!r} positions")
    settings = ExtendSettings(context=context, steps=steps, batch_size=batch_size, lr=lr,
                              warmup_steps=min(15, max(1, steps // 10)), seed=seed)
    folder = Path(cache_dir) if cache_dir is not None else default_data_dir() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"long-{extension_key(base_info['path'], settings)}"

    def extend() -> tuple[DecoderLM, dict]:
        train, val = train_val_split(tokenizer.encode(load_corpus(corpus)), VAL_FRACTION)
        model, info = _extend(base, train, val, settings, eval_windows)
        return model, {**info, "base_val_perplexity": base_info["val_perplexity"],
                       "unigram_perplexity": base_info["unigram_perplexity"],
                       "base_path": base_info["path"]}

    model, info = load_or_train(path, extend, config={"corpus": corpus, **asdict(settings)},
                                step=steps)
    return model.eval(), tokenizer, info


def _extend(base: DecoderLM, train: torch.Tensor, val: torch.Tensor, s: ExtendSettings,
            eval_windows: int | None) -> tuple[DecoderLM, dict]:
    cfg = replace(base.cfg, max_seq_len=s.context)
    model = DecoderLM(cfg)
    model.load_state_dict(base.state_dict())
    eval_context = min(s.context, len(val) - 1)
    before = bucket_means(per_position_loss(base, val, eval_context, eval_windows))
    torch.manual_seed(s.seed)
    trained = train_lm(model, train, s.context, s)
    per_position = per_position_loss(model, val, eval_context, eval_windows)
    after, val_loss = bucket_means(per_position), float(per_position.mean())
    info = {"val_loss": val_loss, "val_perplexity": math.exp(val_loss), **trained,
            "steps": s.steps, "context": s.context, "eval_context": eval_context,
            "params": model.num_parameters(), "config": cfg.to_dict()}
    info.update({f"ppl_{k}": math.exp(v) for k, v in after.items()})
    info.update({f"base_ppl_{k}": math.exp(v) for k, v in before.items()})
    return model.eval(), info

