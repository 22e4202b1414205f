"""A small byte-level decoder LM pre-trained on an offline corpus, cached on disk.

HAT, COMP and FedSpine start from a *pre-trained* model, as the papers start from Llama
checkpoints. Offline, we train our own (ours): :class:`DecoderLM` with :data:`DEFAULT_CONFIG` on
the first 90% of the corpus (bytes), AdamW with linear warm-up and cosine decay, random windows
of ``max_seq_len`` bytes. The first call trains and saves
``$ESTUARY_DATA_DIR/models/<key>.safetensors`` (+ ``.json``); later calls with the same corpus,
config and training settings load it. A file lock keeps concurrent callers from training twice.

Measured on the pydoc corpus (see the defaults below and docs): held-out perplexity is
reported in ``info["val_perplexity"]`` next to the unigram baseline ``info["unigram_perplexity"]``.

The model knows 128-byte contexts only; the serving methods (HAT and its baselines) use its
long-context extension, :func:`ml.models.long_context.long_context_lm`, which leaves this one as is.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ml.data.images import default_data_dir
from ml.data.text import ByteTokenizer, SequenceDataset, load_corpus, train_val_split
from ml.models.checkpoints import load_or_train
from ml.models.transformer import DecoderConfig, DecoderLM, lm_loss

#: The default pre-trained model: 4 layers, d_model 128, ~0.9 M parameters.
DEFAULT_CONFIG = DecoderConfig(vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=384,
                               max_seq_len=128, positional="rope")
DEFAULT_STEPS = 600
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class PretrainSettings:
    """Training hyperparameters; part of the cache key."""

    steps: int = DEFAULT_STEPS
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0


def cache_key(corpus_text: str, cfg: DecoderConfig, settings: PretrainSettings) -> str:
    """Hex digest naming the checkpoint of this corpus, config and training settings."""
    payload = json.dumps({"corpus_sha256": hashlib.sha256(corpus_text.encode("utf-8")).hexdigest(),
                          "config": cfg.to_dict(), "settings": settings.__dict__,
                          "tokenizer": ByteTokenizer().to_dict(), "version": 1}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def pretrained_lm(corpus: str = "pydoc", cfg: DecoderConfig | None = None,
                  steps: int = DEFAULT_STEPS, seed: int = 0, cache_dir: str | Path | None = None,
                  batch_size: int = 32, lr: float = 3e-3
                  ) -> tuple[DecoderLM, ByteTokenizer, dict]:
    """Return ``(model, tokenizer, info)`` for a decoder pre-trained on ``corpus``.

    ``corpus`` is ``"pydoc"`` or a UTF-8 file path (ml.data.text.load_corpus). ``cache_dir``
    defaults to ``$ESTUARY_DATA_DIR/models``. ``info`` has ``val_perplexity``, ``val_loss``,
    ``unigram_perplexity`` (of the held-out split under the training byte frequencies),
    ``train_time_s``, ``steps``, ``params``, ``path`` and ``cached`` (loaded, not trained).
    The model is returned in eval mode.
    """
    cfg = cfg or DEFAULT_CONFIG
    if cfg.vocab_size != ByteTokenizer.vocab_size:
        raise ValueError(f"the byte-level LM needs vocab_size 256, got {cfg.vocab_size}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    settings = PretrainSettings(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                warmup_steps=min(30, max(1, steps // 10)))
    text = load_corpus(corpus)
    tokenizer = ByteTokenizer()
    folder = Path(cache_dir) if cache_dir is not None else default_data_dir() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / cache_key(text, cfg, settings)
    model, info = load_or_train(path, lambda: _pretrain(tokenizer.encode(text), cfg, settings),
                                config={"corpus": corpus, **settings.__dict__}, step=steps)
    return model.eval(), tokenizer, info


def evaluate_perplexity(model: DecoderLM, tokens: torch.Tensor, seq_len: int,
                        batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows of ``tokens``."""
    data = SequenceDataset(tokens, seq_len)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            pairs = [data[i] for i in range(start, min(start + batch_size, len(data)))]
            x, y = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
            total += lm_loss(model(x)[0], y).item() * y.numel()
            count += y.numel()
    model.train(was_training)
    return total / count


def unigram_loss(train: torch.Tensor, val: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats) of ``val`` under add-one smoothed token frequencies of ``train``."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    logp = (counts / counts.sum()).log()
    return float(-logp[val].mean())


def train_lm(model: DecoderLM, tokens: torch.Tensor, seq_len: int,
             s: PretrainSettings) -> dict:
    """Train ``model`` in place for ``s.steps`` AdamW steps on random ``seq_len`` windows of
    ``tokens`` (weight decay on matrices only, warm-up then cosine decay, clipped gradients);
    return ``final_train_loss``, ``train_time_s``, ``train_cpu_s`` and ``threads``."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=s.lr, betas=(0.9, 0.95))
    data = SequenceDataset(tokens, seq_len)
    generator = torch.Generator().manual_seed(s.seed)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    model.train()
    for step in range(s.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, s)
        x, y = data.sample_batch(s.batch_size, generator)
        loss = lm_loss(model(x)[0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
    return {"final_train_loss": loss.item(), "train_time_s": time.perf_counter() - start_wall,
            "train_cpu_s": time.process_time() - start_cpu, "threads": torch.get_num_threads()}


def _pretrain(tokens: torch.Tensor, cfg: DecoderConfig,
              s: PretrainSettings) -> tuple[DecoderLM, dict]:
    train, val = train_val_split(tokens, VAL_FRACTION)
    torch.manual_seed(s.seed)
    model = DecoderLM(cfg)
    trained = train_lm(model, train, cfg.max_seq_len, s)
    val_loss = evaluate_perplexity(model, val, cfg.max_seq_len)
    uni = unigram_loss(train, val, cfg.vocab_size)
    return model.eval(), {
        "val_loss": val_loss, "val_perplexity": math.exp(val_loss),
        "unigram_perplexity": math.exp(uni), **trained,
        "steps": s.steps, "params": model.num_parameters(), "config": cfg.to_dict(),
        "tokenizer": ByteTokenizer().to_dict(), "train_tokens": len(train), "val_tokens": len(val),
    }


def _lr_at(step: int, s: PretrainSettings) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr_ratio * lr``."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
