"""HAT and its baselines as catalogue methods: load the models, serve every device's request on
the event engine, report TTFT, TBT, acceptance and traffic."""
from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ml.algorithms.hat.adapter import Adapter, DistillSettings, trained_adapter
from ml.algorithms.hat.config import DeviceCloudSDConfig, HATConfig, ServingConfig, UShapedConfig
from ml.algorithms.hat.cost import served_models
from ml.algorithms.hat.engine import Engine
from ml.algorithms.hat.partition import USplit
from ml.algorithms.hat.protocols import Context, Trace, cloud_only, device_cloud_sd, hat
from ml.algorithms.hat.session import CloudMiddle
from ml.config import ConfigError
from ml.data.text import ByteTokenizer, load_corpus, train_val_split
from ml.models.hf_llama import HFTokenizer, UnsupportedCheckpoint, load_llama
from ml.models.long_context import long_context_lm
from ml.models.pretrained import (VAL_FRACTION, evaluate_perplexity, pretrained_lm,
                                  unigram_loss)
from ml.models.transformer import DecoderConfig, DecoderLM
from ml.registry import Method, register
from ml.reporting import Reporter
from ml.testbed import resolve_testbed

METRICS = ("ttft_ms", "tbt_ms", "acceptance_rate", "tokens_per_round", "uplink_bytes_per_token",
           "downlink_bytes_per_token", "prefill_uplink_bytes", "traffic_bytes", "sim_time_s",
           "ttft_ms/<device>", "tbt_ms/<device>")
PAPER = ("Xie, Xu, Xu, Liao, Yao (USTC), HAT, arXiv 2503.18989: U-shaped device-cloud "
         "inference with speculative decoding and prompt chunking")


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


@functools.lru_cache(maxsize=4)
def llm(checkpoint: str | None, steps: int, context: int, extend_steps: int,
        device: str = "cpu") -> ServedLM:
    """The served LLM (cached on disk and in this process): ``checkpoint`` if given, else the
    pre-trained LM after its long-context extension."""
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
               config.extend_steps, config.device)


@functools.lru_cache(maxsize=8)
def adapter_for(checkpoint: str | None, steps: int, context: int, extend_steps: int,
                input_layers: int, output_layers: int, layers: int, distill_steps: int,
                device: str = "cpu") -> tuple[USplit, Adapter, dict]:
    """The U-shaped cut of the served LLM and its distilled adapter (cached): the teacher reads
    windows of up to ``context`` tokens (at most the LLM's own), the adapter the last 128 of
    them (ours)."""
    served = llm(checkpoint, steps, context, extend_steps, device)
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


Protocol = Callable[[Context, Trace], object]


def serve(config: ServingConfig, reporter: Reporter, protocol: Protocol, models: dict,
          clock_draft: DecoderLM | None = None) -> dict:
    """Every worker device sends one request at time 0; run them on the engine and report."""
    torch.manual_seed(config.seed)
    testbed = resolve_testbed(config.testbed, workers=config.workers)
    cut = (getattr(config, "input_layers", 1), getattr(config, "output_layers", 1))
    source = served_llm(config)
    served = served_models(config.served_model, source.model, clock_draft, *cut)
    engine = Engine(testbed, config.cloud_batch_tokens, reporter.should_stop)
    traces = []
    requests = prompts(source.val, len(testbed.workers), config.prompt_tokens, config.seed)
    for i, (device, prompt) in enumerate(zip(testbed.workers, requests)):
        ctx = Context(engine, served, device, prompt, config.new_tokens, config.temperature,
                      torch.Generator().manual_seed(config.seed * 100_003 + i))
        trace = Trace(device.name)
        traces.append(trace)
        engine.start(device, protocol(ctx, trace))
    makespan = engine.run()
    return summarise(config, reporter, engine, traces, makespan, models)


def summarise(config: ServingConfig, reporter: Reporter, engine: Engine, traces: list[Trace],
              makespan: float, models: dict) -> dict:
    """Report per-device and running-mean points; return the run's summary."""
    done = sorted(traces, key=lambda t: t.token_times[-1])
    for step, trace in enumerate(done, start=1):
        end = trace.token_times[-1]
        reporter.metric(f"ttft_ms/{trace.device}", 0, trace.ttft_s * 1e3, end)
        reporter.metric(f"tbt_ms/{trace.device}", 0, trace.tbt_s * 1e3, end)
        reporter.metric("ttft_ms", step, 1e3 * sum(t.ttft_s for t in done[:step]) / step, end)
        reporter.metric("tbt_ms", step, 1e3 * sum(t.tbt_s for t in done[:step]) / step, end)
    ledger = engine.testbed.traffic.bytes
    generated = sum(len(t.tokens) for t in traces)

    def traffic(direction: str, kind: str | None = None) -> int:
        return sum(b for k, b in ledger.items() if k.direction == direction
                   and (kind is None or k.kind == kind))
    stats = [t.stats for t in traces if t.stats is not None]
    rounds = sum(s.rounds for s in stats)
    final = {
        "ttft_ms": 1e3 * sum(t.ttft_s for t in traces) / len(traces),
        "tbt_ms": 1e3 * sum(t.tbt_s for t in traces) / len(traces),
        "uplink_bytes_per_token": traffic("up", "decode") / generated,
        "downlink_bytes_per_token": traffic("down", "decode") / generated,
        "prefill_uplink_bytes": traffic("up", "prefill") / len(traces),
        "traffic_bytes": float(engine.testbed.traffic.total()),
        "sim_time_s": makespan,
        "cloud_batches": len(engine.batches),
        "cloud_mean_batch_requests": (sum(b.requests for b in engine.batches)
                                      / max(1, len(engine.batches))),
    }
    if rounds:
        final["acceptance_rate"] = (sum(s.accepted for s in stats)
                                    / max(1, sum(s.drafted for s in stats)))
        final["tokens_per_round"] = sum(s.committed_in_rounds for s in stats) / rounds
    for name in ("acceptance_rate", "tokens_per_round", "uplink_bytes_per_token",
                 "downlink_bytes_per_token", "prefill_uplink_bytes", "traffic_bytes"):
        if name in final:
            reporter.metric(name, len(done), final[name], makespan)
    reporter.metric("sim_time_s", len(done), makespan, makespan)
    chunks = [t.chunk_size for t in traces if t.chunk_size is not None]
    return {"final": final, "models": models,
            "devices": [{"device": t.device, "ttft_ms": t.ttft_s * 1e3, "tbt_ms": t.tbt_s * 1e3,
                         "chunk_size": t.chunk_size, "tokens": len(t.tokens),
                         "output": t.tokens} for t in traces],
            "chunk_sizes": sorted(set(chunks))}


def _llm_info(config: ServingConfig) -> dict:
    info = served_llm(config).info
    out = {"llm_val_perplexity": info["val_perplexity"],
           "llm_unigram_perplexity": info["unigram_perplexity"], "llm_params": info["params"],
           "llm_context": info["context"], "llm_extend_steps": info["extend_steps"]}
    if "checkpoint" in info:
        out["llm_checkpoint"] = info["checkpoint"]
    # By position (held-out, context windows): the base LM and its extension.
    out.update({f"llm_{k}": v for k, v in info.items() if "ppl_" in k})
    return out


def _check_cut(config: UShapedConfig) -> None:
    """The U-shaped cut must leave the served model a middle (a checkpoint's depth is known only
    once it is loaded)."""
    try:
        USplit(served_llm(config).model, config.input_layers, config.output_layers)
    except ValueError as exc:
        raise ConfigError({"input_layers": str(exc)}) from None


def run_hat(config: HATConfig, reporter: Reporter) -> dict:
    """HAT (see :mod:`ml.algorithms.hat`)."""
    _check_cut(config)
    split, adapter, ad_info = adapter_for(config.checkpoint, config.pretrain_steps,
                                          config.context_tokens, config.extend_steps,
                                          config.input_layers,
                                          config.output_layers, config.adapter_layers,
                                          config.distill_steps, config.device)
    cloud = CloudMiddle(split)
    # The adapter's check measures the LLM on its own windows; keep the LLM's figure apart.
    models = {**{("adapter_check_" + k if k.startswith("llm_") else k): v
                 for k, v in ad_info.items() if k != "cached"}, **_llm_info(config)}
    return serve(config, reporter,
                 lambda ctx, trace: hat(ctx, split, adapter, cloud, config.gamma,
                                        config.chunk_size, config.parallel_drafting, trace,
                                        config.draft_window),
                 models)


def run_u_shaped(config: UShapedConfig, reporter: Reporter) -> dict:
    """Plain U-shaped split inference: one hidden-state round trip per token, no chunking."""
    _check_cut(config)
    split = USplit(served_llm(config).model, config.input_layers, config.output_layers)
    cloud = CloudMiddle(split)
    return serve(config, reporter,
                 lambda ctx, trace: hat(ctx, split, None, cloud, 0, config.prompt_tokens,
                                        False, trace),
                 _llm_info(config))


def run_cloud_only(config: ServingConfig, reporter: Reporter) -> dict:
    """Cloud-only inference: tokens up, the whole LLM in the cloud."""
    model = served_llm(config).model
    return serve(config, reporter, lambda ctx, trace: cloud_only(ctx, model, trace),
                 _llm_info(config))


def run_device_cloud_sd(config: DeviceCloudSDConfig, reporter: Reporter) -> dict:
    """Device-cloud speculative decoding with a separate draft LM sending raw tokens."""
    model = served_llm(config).model
    if config.draft_checkpoint is not None:
        draft, info = draft_checkpoint_lm(config.draft_checkpoint, config.checkpoint,
                                          config.pretrain_steps, config.context_tokens,
                                          config.extend_steps, config.device)
    else:
        draft, info = draft_lm(config.draft_d_model, config.draft_layers, config.draft_steps,
                               config.context_tokens, config.extend_steps, config.device)
    models = {**_llm_info(config), "draft_val_perplexity": info["val_perplexity"],
              "draft_params": info["params"]}
    return serve(config, reporter,
                 lambda ctx, trace: device_cloud_sd(ctx, model, draft, config.gamma, trace),
                 models, clock_draft=draft)


BASELINES = ("cloud-only-inference", "u-shaped-inference", "device-cloud-sd")

CLOUD_ONLY = register(Method(
    name="cloud-only-inference", paper=PAPER,
    summary="Baseline of HAT: the device sends its prompt's tokens, the cloud runs the whole LLM "
            "(batched across devices) and streams the tokens back.",
    config=ServingConfig, run=run_cloud_only, metrics=METRICS, family="device-cloud-inference"))

U_SHAPED = register(Method(
    name="u-shaped-inference", paper=PAPER,
    summary="Baseline of HAT: U-shaped split (first and last layers on the device, the middle in "
            "the cloud), one hidden-state round trip per token, no speculation, no chunking.",
    config=UShapedConfig, run=run_u_shaped, metrics=METRICS, family="device-cloud-inference"))

DEVICE_CLOUD_SD = register(Method(
    name="device-cloud-sd", paper=PAPER,
    summary="Baseline of HAT: a separate small draft LM on the device drafts gamma tokens and "
            "sends the raw tokens; the cloud verifies them with the whole LLM.",
    config=DeviceCloudSDConfig, run=run_device_cloud_sd, metrics=METRICS,
    family="device-cloud-inference"))

HAT = register(Method(
    name="hat", paper=PAPER,
    summary="U-shaped device-cloud inference: input and output submodels plus a distilled "
            "adapter draft on the device, the middle verifies in the cloud from hidden states "
            "(never tokens); parallel drafting and pipelined prompt chunking sized per device.",
    config=HATConfig, run=run_hat, baselines=BASELINES, metrics=METRICS,
    family="device-cloud-inference"))
