"""What the device-cloud methods serve: the LLM (pre-trained here or a local checkpoint), HAT's
U-shaped cut and distilled adapter, device-cloud SD's draft LM, and the prompts (held-out text).

Every loader is cached on disk and in the process, so each rank of a distributed run builds the
same models from the same config.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ml.algorithms.device_cloud_inference.adapter import Adapter, DistillSettings, trained_adapter
from ml.algorithms.device_cloud_inference.config import ServingConfig, UShapedConfig
from ml.algorithms.device_cloud_inference.partition import USplit
from ml.config import ConfigError
from ml.data.text import ByteTokenizer, load_corpus, train_val_split
from ml.models.hf_llama import HFTokenizer, UnsupportedCheckpoint, load_llama
from ml.models.long_context import long_context_lm
from ml.models.pretrained import VAL_FRACTION, evaluate_perplexity, pretrained_lm, unigram_loss
from ml.models.pretraining import LM_SIZES, LMSize, corpus_splits, pretrained_lm_of_size
from ml.models.transformer import DecoderConfig, DecoderLM


@dataclass(frozen=True)
class ServedLM:
    """The served LLM and the pydoc corpus in its tokenizer: the training split for distilling
    HAT's adapter, the held-out split for the prompts. ``info["path"]`` names its weights."""

    model: DecoderLM
    train: torch.Tensor
    val: torch.Tensor
    info: dict


@functools.lru_cache(maxsize=4)
def corpus_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """Train and held-out byte tokens of the pydoc corpus (the LM's own split)."""
    return train_val_split(ByteTokenizer().encode(load_corpus("pydoc")), VAL_FRACTION)


def _lm(cfg: DecoderConfig | None, steps: int, context: int, extend_steps: int
        ) -> tuple[DecoderLM, dict]:
    """The pre-trained LM, extended to ``context``-token windows unless ``extend_steps`` is 0."""
    if extend_steps == 0:
        model, _, info = pretrained_lm("pydoc", cfg=cfg, steps=steps)
        return model, {**info, "context": model.cfg.max_seq_len, "extend_steps": 0}
    model, _, info = long_context_lm("pydoc", cfg=cfg, base_steps=steps, context=context,
                                     steps=extend_steps)
    return model, {**info, "extend_steps": extend_steps}


def _checkpoint_lm(field: str, folder: str) -> tuple[DecoderLM, HFTokenizer, dict]:
    """A local Hugging Face Llama folder; what is wrong with it is a config error of ``field``."""
    path = Path(folder).expanduser()
    try:
        model, _ = load_llama(path)
        tokenizer = HFTokenizer(path)
    except (FileNotFoundError, UnsupportedCheckpoint) as exc:
        raise ConfigError({field: str(exc)}) from None
    digest = hashlib.sha256(str(path.resolve()).encode())
    for file in sorted(path.glob("*.safetensors")):
        digest.update(f"{file.name}:{file.stat().st_size}:{file.stat().st_mtime_ns}".encode())
    info = {"checkpoint": str(folder), "path": f"hf-{digest.hexdigest()[:20]}",
            "params": model.num_parameters(), "context": model.cfg.max_seq_len,
            "extend_steps": 0}
    return model, tokenizer, info


def _sized(size: LMSize) -> tuple[DecoderLM, torch.Tensor, torch.Tensor, dict]:
    """A deep BPE LM of :mod:`ml.models.pretraining` (pre-trained once, cached) and its
    corpus's train and held-out token ids."""
    model, _, info = pretrained_lm_of_size(size)
    splits = corpus_splits(size.corpus, size.vocab_size)
    return model, splits.train_tokens, splits.val_tokens, {
        "path": info["path"], "params": info["params"], "size": size.name,
        "val_perplexity": info["val_perplexity"],
        "unigram_perplexity": info["unigram_perplexity"],
        "context": model.cfg.max_seq_len, "extend_steps": 0}


@functools.lru_cache(maxsize=4)
def llm(checkpoint: str | None, steps: int, context: int, extend_steps: int,
        device: str = "cpu", lm_size: str | None = None) -> ServedLM:
    """The served LLM (cached on disk and in this process): ``checkpoint`` if given, else the
    deep BPE LM ``lm_size`` if given, else the pre-trained byte-level LM after its long-context
    extension."""
    if checkpoint is None and lm_size is not None:
        model, train, val, info = _sized(LM_SIZES[lm_size])
        return ServedLM(model.to(device), train, val, info)
    if checkpoint is None:
        model, info = _lm(None, steps, context, extend_steps)
        train, val = corpus_tokens()
        return ServedLM(model.to(device), train, val, info)
    model, tokenizer, info = _checkpoint_lm("checkpoint", checkpoint)
    train_text, val_text = train_val_split(load_corpus("pydoc"), VAL_FRACTION)
    train, val = tokenizer.encode(train_text), tokenizer.encode(val_text)
    info.update(val_perplexity=held_out_perplexity(model, val),
                unigram_perplexity=math.exp(unigram_loss(train, val, model.cfg.vocab_size)))
    return ServedLM(model.to(device), train, val, info)


def held_out_perplexity(model: DecoderLM, val: torch.Tensor, windows: int = 16) -> float:
    """Perplexity of a checkpoint on the first ``windows`` held-out windows of up to 256
    tokens (a few, so that a large model on a CPU is measured in seconds)."""
    window = min(256, model.cfg.max_seq_len)
    return math.exp(evaluate_perplexity(model, val[:windows * window + 1], window))


def served_llm(config: ServingConfig) -> ServedLM:
    """:func:`llm` of a serving config."""
    return llm(config.checkpoint, config.pretrain_steps, config.context_tokens,
               config.extend_steps, config.device, config.lm_size)


@functools.lru_cache(maxsize=8)
def adapter_for(checkpoint: str | None, steps: int, context: int, extend_steps: int,
                input_layers: int, output_layers: int, layers: int, distill_steps: int,
                device: str = "cpu", lm_size: str | None = None
                ) -> tuple[USplit, Adapter, dict]:
    """The U-shaped cut of the served LLM and its distilled adapter (cached): the teacher reads
    windows of up to ``context`` tokens (at most the LLM's own), the adapter the last 128 of
    them (ours)."""
    served = llm(checkpoint, steps, context, extend_steps, device, lm_size)
    split = USplit(served.model, input_layers, output_layers)
    teacher = min(context, served.info["context"])
    window = min(128, teacher)
    adapter, ad_info = trained_adapter(split, served.info["path"], served.train, served.val,
                                       layers, DistillSettings(steps=distill_steps,
                                                               seq_len=window, context=teacher))
    return split, adapter, ad_info


@functools.lru_cache(maxsize=4)
def draft_lm(d_model: int, layers: int, steps: int, context: int, extend_steps: int,
             device: str = "cpu") -> tuple[DecoderLM, dict]:
    """The separate small draft LM of device-cloud speculative decoding (ours: same corpus,
    pre-trained on 128-byte windows and extended like the served LM)."""
    cfg = DecoderConfig(vocab_size=256, d_model=d_model, n_layers=layers,
                        n_heads=max(1, d_model // 32), d_ff=3 * d_model, max_seq_len=128)
    model, info = _lm(cfg, steps, context, extend_steps)
    return model.to(device), info


@functools.lru_cache(maxsize=4)
def sized_draft_lm(lm_size: str, d_model: int, layers: int, steps: int,
                   device: str = "cpu") -> tuple[DecoderLM, dict]:
    """Device-cloud SD's draft LM for the deep LM ``lm_size`` (ours): ``layers`` blocks of width
    ``d_model`` on the same corpus, BPE and context, pre-trained ``steps`` steps with the
    size's other settings."""
    size = LM_SIZES[lm_size]
    cfg = size.config
    heads = max(1, d_model // cfg.head_dim)
    draft = LMSize(f"{size.name}-draft", size.corpus, size.vocab_size,
                   DecoderConfig(vocab_size=cfg.vocab_size, d_model=d_model, n_layers=layers,
                                 n_heads=heads, d_ff=3 * d_model, max_seq_len=cfg.max_seq_len,
                                 positional=cfg.positional),
                   size.settings, size.eval_windows)
    model, _, info = pretrained_lm_of_size(draft, steps=steps)
    return model.to(device), info


@functools.lru_cache(maxsize=4)
def draft_checkpoint_lm(folder: str, checkpoint: str, steps: int, context: int,
                        extend_steps: int, device: str = "cpu") -> tuple[DecoderLM, dict]:
    """Device-cloud SD's draft LM from a local folder; it must share the vocabulary of the
    served ``checkpoint``, on whose held-out text its perplexity is measured."""
    served = llm(checkpoint, steps, context, extend_steps, device)
    model, _, info = _checkpoint_lm("draft_checkpoint", folder)
    if model.cfg.vocab_size != served.model.cfg.vocab_size:
        raise ConfigError({"draft_checkpoint": f"its vocabulary has {model.cfg.vocab_size} "
                                               f"tokens, the served checkpoint's "
                                               f"{served.model.cfg.vocab_size}"})
    info["val_perplexity"] = held_out_perplexity(model, served.val)
    return model.to(device), info


def prompts(val: torch.Tensor, count: int, length: int, seed: int) -> list[list[int]]:
    """``count`` prompts of ``length`` held-out tokens ``val`` at seeded random offsets."""
    if length + 1 > len(val):
        raise ValueError(f"prompts of {length} tokens exceed the held-out text ({len(val)})")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(val) - length, (count,), generator=generator).tolist()
    return [val[s:s + length].tolist() for s in starts]


def llm_info(config: ServingConfig) -> dict:
    info = served_llm(config).info
    out = {"llm_val_perplexity": info["val_perplexity"],
           "llm_unigram_perplexity": info["unigram_perplexity"], "llm_params": info["params"],
           "llm_context": info["context"], "llm_extend_steps": info["extend_steps"]}
    if "checkpoint" in info:
        out["llm_checkpoint"] = info["checkpoint"]
    # By position (held-out, context windows): the base LM and its extension.
    out.update({f"llm_{k}": v for k, v in info.items() if "ppl_" in k})
    return out


def check_cut(config: UShapedConfig) -> None:
    """The U-shaped cut must leave the served model a middle (a checkpoint's depth is known only
    once it is loaded)."""
    try:
        USplit(served_llm(config).model, config.input_layers, config.output_layers)
    except ValueError as exc:
        raise ConfigError({"input_layers": str(exc)}) from None
