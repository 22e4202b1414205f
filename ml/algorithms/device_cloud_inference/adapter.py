"""HAT step 1 (continued): the adapter that turns input + output submodels into a draft model.

The on-device draft model is input submodel → adapter → output submodel: it shares the LLM's
embedding, first and last blocks and head, and replaces the cloud's middle blocks by a small
adapter. Its design and training are ours [I] (arXiv 2503.18989's abstract says only
"lightweight adapter, trained by distillation with the LLM frozen"):

- the adapter is ``adapter_layers`` decoder blocks of the LLM's width, initialised from the
  first middle blocks (a warm start: the middle's first block is the best one-block guess);
- distillation: on random windows of the training text, minimise the KL divergence from the
  full model's next-token distribution to the draft model's (both through the same frozen output
  submodel), plus 0.1 × the mean squared error between the adapter's and the middle's hidden
  states, normalised by the latter's mean square; AdamW, cosine decay; the LLM stays frozen;
- long prompts: as in serving, where the draft model only sees the last ``draft_window`` prompt
  positions but the input submodel has read the whole prompt, the teacher (the full model) runs
  over a window of ``context`` tokens cut to a log-uniform random length in ``[seq_len,
  context]`` (prompts of every scale equally likely) and the student (adapter and its output
  path) over the last ``seq_len`` positions of it, at their true rotary positions
  (``context == seq_len``: plain windows, the student sees all of it);
- on-policy text (ours, after DistillSpec): ``generated_fraction`` of the steps use windows that
  end in the LLM's own greedy continuation (:func:`continuation_batches`), the text a draft is
  asked to predict in serving;
- the result is cached beside the LLM under ``$ESTUARY_DATA_DIR/models`` (safetensors + JSON),
  keyed by the LLM checkpoint, the cut and the training settings.

:func:`draft_quality` measures on held-out text what speculative decoding will see: top-1
agreement (greedy acceptance), ``1 - TV(p, q)`` (the acceptance rate of speculative sampling)
and both models' perplexities.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ml.algorithms.device_cloud_inference.partition import USplit
from ml.data.images import default_data_dir
from ml.data.text import SequenceDataset
from ml.models.checkpoints import load_or_train
from ml.models.transformer import Cache, DecoderBlock, DecoderLM

#: Weight of the hidden-state matching term next to the KL term (ours [I]).
HIDDEN_LOSS_WEIGHT = 0.1


class Adapter(nn.Module):
    """``layers`` decoder blocks of the LLM's width standing in for the middle submodel."""

    def __init__(self, split: USplit, layers: int = 1):
        super().__init__()
        if layers < 1:
            raise ValueError(f"an adapter needs at least one block, got {layers}")
        cfg = split.model.cfg
        self.blocks = nn.ModuleList(
            DecoderBlock(cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff) for _ in range(layers))
        start, end = split.middle_range
        with torch.no_grad():  # warm start from the middle blocks (ours)
            for i, block in enumerate(self.blocks):
                source = split.model.blocks[start + i % (end - start)]
                block.load_state_dict(source.state_dict())

    def forward(self, h: torch.Tensor, rope, past: Cache | None = None
                ) -> tuple[torch.Tensor, Cache]:
        present: Cache = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, rope, None if past is None else past[i])
            present.append(kv)
        return h, present


@dataclass(frozen=True)
class DistillSettings:
    """How the adapter is trained; part of its cache key."""

    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128  # the student's window (the last seq_len positions)
    context: int = 128  # the teacher's longest window (>= seq_len)
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    generated_fraction: float = 0.5  # share of steps on the LLM's own greedy continuations
    generated_tokens: int = 64  # continuation length of each such window
    generated_batches: int = 32  # distinct batches of continuations, made once


@contextmanager
def frozen(module: nn.Module):
    """Parameters of ``module`` need no gradient inside the block (restored afterwards)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def teacher_and_student_logits(split: USplit, adapter: Adapter, x: torch.Tensor,
                               student_from: int = 0
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(p_logits, q_logits, h_mid, h_adapter)`` of token windows ``x`` [B, T], no caches, at
    positions ``student_from..T-1``: the full model reads the whole window, the draft model
    (adapter and its output path) only those positions, as with a draft window in serving.

    Gradients flow to the adapter only (call inside :func:`frozen` of the LLM).
    """
    model = split.model
    start, end = split.middle_range
    rope = model.rotary(x.shape[1] - student_from, student_from, x.device)
    with torch.no_grad():
        h_in, _ = model.forward_blocks(model.embed_tokens(x), 0, start)
        h_mid, _ = model.forward_blocks(h_in, start, end)
        h_out, _ = model.forward_blocks(h_mid, end, len(model.blocks))
        p_logits = model.logits_from_hidden(h_out[:, student_from:])
    h_ad, _ = adapter(h_in[:, student_from:], rope)
    q_logits = model.logits_from_hidden(
        model.forward_blocks(h_ad, end, len(model.blocks), pos_offset=student_from)[0])
    return p_logits, q_logits, h_mid[:, student_from:], h_ad


def distillation_loss(p_logits: torch.Tensor, q_logits: torch.Tensor, h_mid: torch.Tensor,
                      h_ad: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per position plus the normalised hidden-state error (weight 0.1)."""
    log_p = F.log_softmax(p_logits, dim=-1)
    log_q = F.log_softmax(q_logits, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    hidden = (h_ad - h_mid).pow(2).mean() / h_mid.pow(2).mean().clamp_min(1e-8)
    return kl + HIDDEN_LOSS_WEIGHT * hidden


def distill_adapter(split: USplit, adapter: Adapter, train_tokens: torch.Tensor,
                    settings: DistillSettings) -> dict:
    """Train ``adapter`` in place against the frozen middle submodel; return loss figures."""
    device = next(adapter.parameters()).device
    if settings.context < settings.seq_len:
        raise ValueError(f"context ({settings.context}) must be >= seq_len ({settings.seq_len})")
    data = SequenceDataset(train_tokens, settings.context)
    generator = torch.Generator().manual_seed(settings.seed)
    start = time.perf_counter()
    generated = continuation_batches(split.model, data, settings, generator)
    opt = torch.optim.AdamW(adapter.parameters(), lr=settings.lr,
                            weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.steps, settings.lr * 0.1)
    adapter.train()
    losses = []
    with frozen(split.model):
        for _ in range(settings.steps):
            if generated and float(torch.rand((), generator=generator)) < \
                    settings.generated_fraction:
                x = generated[int(torch.randint(len(generated), (), generator=generator))]
            else:
                x = data.sample_batch(settings.batch_size, generator)[0]
                x = x[:, :window_length(settings, generator)]
            loss = distillation_loss(*teacher_and_student_logits(
                split, adapter, x.to(device), x.shape[1] - settings.seq_len))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(adapter.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
    adapter.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return {"distill_loss_first": losses[0], "distill_loss_final": sum(tail) / len(tail),
            "distill_time_s": time.perf_counter() - start}


def window_length(settings: DistillSettings, generator: torch.Generator,
                  shortest: int | None = None) -> int:
    """A window of log-uniform random length in ``[shortest or seq_len, context]``: prompts of
    every scale equally likely, as in serving."""
    low = shortest or settings.seq_len
    if settings.context <= low:
        return settings.context
    u = float(torch.rand((), generator=generator))
    return min(settings.context, max(low, round(low * (settings.context / low) ** u)))


@torch.no_grad()
def continuation_batches(model: DecoderLM, data: SequenceDataset, settings: DistillSettings,
                         generator: torch.Generator) -> list[torch.Tensor]:
    """``generated_batches`` batches of training prompts, each followed by the LLM's own greedy
    continuation of ``generated_tokens`` (ours, after DistillSpec, Zhou et al. 2023: the draft
    then learns the text it will be asked to draft, not only the corpus). Empty when
    ``generated_fraction`` is 0."""
    if settings.generated_fraction <= 0:
        return []
    new = min(settings.generated_tokens, settings.seq_len // 2)  # leave the window a prompt
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batches = []
    for _ in range(settings.generated_batches):
        prompt_len = window_length(settings, generator, settings.seq_len) - new
        x = data.sample_batch(settings.batch_size, generator)[0][:, :prompt_len].to(device)
        logits, cache = model(x, use_cache=True)
        tokens = [x]
        for _ in range(new):
            tokens.append(logits[:, -1:].argmax(-1))
            logits, cache = model(tokens[-1], cache, use_cache=True)
        batches.append(torch.cat(tokens, dim=1).cpu())
    model.train(was_training)
    return batches


@torch.no_grad()
def draft_quality(split: USplit, adapter: Adapter, val_tokens: torch.Tensor, seq_len: int = 128,
                  max_windows: int = 64, context: int | None = None) -> dict:
    """Held-out agreement of the draft model (input → adapter → output) with the full model, on
    the last ``seq_len`` positions of windows of ``context`` tokens (default ``seq_len``)."""
    device = next(adapter.parameters()).device
    context = min(context or seq_len, len(val_tokens) - 1)
    data = SequenceDataset(val_tokens, context)
    windows = min(len(data), max_windows)
    x = torch.stack([data[i][0] for i in range(windows)]).to(device)
    y = torch.stack([data[i][1] for i in range(windows)]).to(device)[:, -seq_len:]
    p_logits, q_logits, _, _ = teacher_and_student_logits(split, adapter, x,
                                                          max(0, context - seq_len))
    p, q = p_logits.softmax(-1), q_logits.softmax(-1)
    return {
        "draft_top1_agreement": (p.argmax(-1) == q.argmax(-1)).float().mean().item(),
        "draft_expected_acceptance": torch.minimum(p, q).sum(-1).mean().item(),
        "llm_val_perplexity": math.exp(F.cross_entropy(p_logits.flatten(0, 1), y.flatten()).item()),
        "draft_val_perplexity": math.exp(F.cross_entropy(q_logits.flatten(0, 1),
                                                         y.flatten()).item()),
    }


def adapter_key(llm_path: str, split: USplit, layers: int, settings: DistillSettings) -> str:
    """Hex digest naming the adapter trained for this LLM checkpoint, cut and settings."""
    payload = json.dumps({"llm": Path(llm_path).name, "input_layers": split.input_layers,
                          "output_layers": split.output_layers, "layers": layers,
                          "settings": asdict(settings), "version": 3}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def trained_adapter(split: USplit, llm_path: str, train_tokens: torch.Tensor,
                    val_tokens: torch.Tensor, layers: int = 1,
                    settings: DistillSettings | None = None,
                    cache_dir: str | Path | None = None) -> tuple[Adapter, dict]:
    """The adapter for ``split``: loaded from the cache, or distilled now and saved.

    ``llm_path`` is the LLM checkpoint's file (its name is a content key). Returns the adapter
    (eval mode, on the LLM's device) and its ``info``: distillation losses, held-out
    :func:`draft_quality`, parameter count, ``cached``.
    """
    settings = settings or DistillSettings()
    folder = Path(cache_dir) if cache_dir is not None else default_data_dir() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"hat-adapter-{adapter_key(llm_path, split, layers, settings)}"
    device = next(split.model.parameters()).device

    def distill() -> tuple[Adapter, dict]:
        torch.manual_seed(settings.seed)
        adapter = Adapter(split, layers).to(device)
        info = distill_adapter(split, adapter, train_tokens, settings)
        info.update(draft_quality(split, adapter, val_tokens, settings.seq_len, 64,
                                  settings.context))
        info["adapter_params"] = sum(p.numel() for p in adapter.parameters())
        return adapter.cpu(), info

    adapter, info = load_or_train(path, distill, config={"layers": layers, **asdict(settings)},
                                  step=settings.steps, model=Adapter(split, layers).cpu())
    adapter.to(device)
    return adapter.eval(), info
