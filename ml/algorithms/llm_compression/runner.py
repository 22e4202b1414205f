"""One pruning job on one device: COMP or one of its baselines (methods.py registers them).

Methods (all share :class:`PruneConfig`'s keys, so one experiment compares them on the same
model, calibration set, budget and evaluation):

- ``comp``: hybrid-granularity pruning with mask tuning (hybrid.py);
- ``llm-pruner``: LLM-Pruner's first-order group importance, no recovery (baselines.py);
- ``llm-pruner-lora``: the same, then its LoRA recovery;
- ``wanda-channel``: Wanda-style (or magnitude) MLP channel pruning;
- ``layer-prune``: ShortGPT-style removal of whole blocks only.

One run:

1. Load the model (source.py): the byte-level LM pre-trained on the corpus, or a local
   Llama-style checkpoint; draw the calibration set; build the next-word choice task.
2. Evaluate the dense model (step 0): held-out perplexity, task accuracy, parameters, FLOPs of a
   ``seq_len`` forward pass, measured latency of that pass.
3. Prune, measuring time, peak memory (memory.py) and the FLOPs executed (torch's FLOP counter;
   they advance the emulated clock, ``sim_time_s``, of the host: ours, the testbed's first edge
   device, as COMP prunes on device). LoRA recovery is timed and counted apart
   (``recovery_*``).
4. Evaluate the pruned model (step 1), save it as safetensors (ml.models.checkpoints), load the
   file back into a fresh model and check it computes the same logits (``reload_max_abs_diff``).

Peak pruning memory (``prune_peak_memory_bytes``, also reported as the standard
``memory_bytes``) = the bytes of the model's weights resident on the measuring device when
pruning starts + the peak of torch allocations during pruning beyond that point (memory.py: the
profiler's allocation events on CPU, ``torch.cuda.max_memory_allocated`` on CUDA). On CUDA the
block-at-a-time methods keep the model on the CPU and move one block at a time to the GPU, so
only that block counts; LLM-Pruner needs the whole model there for its backward pass.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Literal

import torch
from torch.utils.flop_counter import FlopCounterMode

from ml.algorithms.llm_compression.baselines import (layer_drop_prune, llm_pruner_plan,
                                                     llm_pruner_prune, lora_recovery,
                                                     wanda_channel_prune)
from ml.algorithms.llm_compression.config import LLMPrunerLoraConfig, PruneConfig
from ml.algorithms.llm_compression.evaluate import ModelReport, evaluate_model
from ml.algorithms.llm_compression.hybrid import comp_prune
from ml.algorithms.llm_compression.memory import PeakMemory
from ml.algorithms.llm_compression.pipeline import BlockwiseSettings
from ml.algorithms.llm_compression.source import calibration_set, choice_task, load_source
from ml.data.images import default_data_dir
from ml.method_run import MethodRun, check_cancelled, method_run
from ml.models.checkpoints import load_checkpoint, save_checkpoint
from ml.models.hf_llama import set_norm_eps
from ml.models.transformer import DecoderLM
from ml.reporting import Reporter
from ml.testbed import resolve_testbed

# -- one run --------------------------------------------------------------------------------------

Kind = Literal["comp", "llm-pruner", "llm-pruner-lora", "wanda-channel", "layer-prune"]


def _output_path(config: PruneConfig, kind: str) -> Path:
    folder = Path(config.output_dir) if config.output_dir else default_data_dir() / "pruned"
    digest = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True)
                            .encode()).hexdigest()[:12]
    return folder / f"{kind}-{digest}"


def resident_weight_bytes(model: DecoderLM, device: torch.device) -> int:
    """Bytes of ``model``'s weights that live on ``device`` (counted once if tied)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.device.type == device.type and id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def _report_model(reporter: Reporter, step: int, report: ModelReport, sim_s: float) -> None:
    reporter.metric("perplexity", step, report.perplexity, sim_s)
    reporter.metric("accuracy", step, report.accuracy, sim_s)
    reporter.metric("params", step, report.params, sim_s)
    reporter.metric("flops", step, report.flops, sim_s)
    reporter.metric("latency_ms", step, report.latency_ms, sim_s)


_DENSE_REPORTS: dict[tuple, ModelReport] = {}


def run_pruning(kind: Kind, config: PruneConfig, reporter: Reporter) -> dict:
    """Run pruning method ``kind`` (steps 1-4 of the module docstring)."""
    testbed = resolve_testbed(config.testbed)
    host = testbed.workers[0]  # on-device pruning (ours): first edge device, else first cloud
    check_cancelled(reporter)
    with method_run(config, reporter) as run:
        return _run(kind, config, run, testbed, host)


def _run(kind: Kind, config: PruneConfig, run: MethodRun, testbed, host) -> dict:
    reporter, device = run.reporter, run.device
    # 1. model and data
    source = load_source(config.corpus, config.checkpoint, config.model_size,
                         config.pretrain_steps, config.seed)
    model = source.model
    seq_len = config.seq_len or min(model.cfg.max_seq_len, 1024)
    if model.cfg.positional == "learned" and seq_len > model.cfg.max_seq_len:
        raise ValueError(f"seq_len {seq_len} exceeds the model's max_seq_len "
                         f"{model.cfg.max_seq_len}")
    calib_x, calib_y = calibration_set(source.train_tokens, config.calibration_size,
                                       seq_len, config.seed)
    task = choice_task(source, config.task_items, config.task_choices,
                       context_chars=max(8, min(96, seq_len - 17)), seed=config.seed)
    reporter.log(f"model: {model.num_parameters()} parameters, {len(model.blocks)} blocks; "
                 f"calibration {tuple(calib_x.shape)}; task {len(task)} items")

    def evaluate(m: DecoderLM) -> ModelReport:
        return evaluate_model(m, source.val_tokens, task, seq_len=seq_len,
                              eval_windows=config.eval_windows,
                              latency_repeats=config.latency_repeats, device=device)

    # 2. the dense model (its report is reused by later runs of this process on the same model,
    # data and evaluation settings: a bench compares five methods on one dense model)
    model.to(device)
    key = (source.info.get("path"), config.checkpoint, config.corpus,
           seq_len, config.eval_windows, config.task_items, config.task_choices,
           config.latency_repeats, config.seed, str(device))
    if key not in _DENSE_REPORTS:
        _DENSE_REPORTS[key] = evaluate(model)
    dense = _DENSE_REPORTS[key]
    _report_model(reporter, 0, dense, 0.0)
    check_cancelled(reporter)

    # 3. pruning, measured
    offload = device.type == "cuda" and kind not in ("llm-pruner", "llm-pruner-lora")
    if offload:
        model.to("cpu")
    flops = FlopCounterMode(display=False)
    details: dict = {}
    with PeakMemory(device) as peak, flops:
        resident = resident_weight_bytes(model, device)
        start = time.perf_counter()
        details = _prune(kind, config, model, calib_x, calib_y, device, reporter)
        prune_time = time.perf_counter() - start
    prune_flops = int(flops.get_total_flops())
    testbed.compute(host, prune_flops)
    prune_peak = resident + peak.bytes
    model.to(device)
    recovery = {}
    if kind == "llm-pruner-lora":
        recovery = _recover(config, model, source.train_tokens, seq_len, device, reporter,
                            testbed, host)

    # 4. the pruned model: evaluate, save, reload
    pruned = evaluate(model)
    sim = host.clock_s
    _report_model(reporter, 1, pruned, sim)
    reporter.metric("prune_peak_memory_bytes", 1, prune_peak, sim)
    reporter.metric("memory_bytes", 1, prune_peak, sim)
    reporter.metric("prune_time_s", 1, prune_time, sim)
    reporter.metric("achieved_ratio", 1, 1 - pruned.params / dense.params, sim)
    reporter.metric("sim_time_s", 1, sim, sim)
    path = _output_path(config, kind)
    final = {
        "perplexity": pruned.perplexity, "accuracy": pruned.accuracy,
        "params": float(pruned.params), "flops": float(pruned.flops),
        "latency_ms": pruned.latency_ms,
        "dense_perplexity": dense.perplexity, "dense_accuracy": dense.accuracy,
        "dense_params": float(dense.params), "dense_flops": float(dense.flops),
        "dense_latency_ms": dense.latency_ms,
        "achieved_ratio": 1 - pruned.params / dense.params,
        "prune_peak_memory_bytes": float(prune_peak), "memory_bytes": float(prune_peak),
        "prune_work_memory_bytes": float(peak.bytes), "prune_time_s": prune_time,
        "prune_flops": float(prune_flops), "sim_time_s": sim,
        **{f"recovery_{k}": v for k, v in recovery.items()},
    }
    tensors = save_checkpoint(path, model, config=config.model_dump(mode="json"), step=1,
                              metrics={k: v for k, v in final.items() if math.isfinite(v)},
                              extra={"method": kind, "rms_norm_eps": source.rms_norm_eps,
                                     "tokenizer": source.tokenizer.to_dict()})
    final["reload_max_abs_diff"] = reload_difference(path, model, calib_x[:2].to(device),
                                                     source.rms_norm_eps)
    reporter.log(f"saved the pruned model to {tensors}")
    return run.summary(
        final,
        method=kind,
        checkpoint=str(tensors),
        architecture=model.architecture(),
        dense=dense.as_dict(),
        pruned=pruned.as_dict(),
        details=details,
        source=source.info,
        task_items=len(task),
        device=host.name,
        memory_measure=("torch.cuda.max_memory_allocated" if device.type == "cuda"
                        else "torch profiler CPU allocation events") + " + resident weights",
    )


def load_pruned(path: str | Path) -> tuple[DecoderLM, dict]:
    """A pruned model saved by a run, ready for inference (eval mode, its norm epsilon)."""
    model, metadata = load_checkpoint(path)
    set_norm_eps(model, float(metadata.get("extra", {}).get("rms_norm_eps", 1e-6)))
    return model.eval(), metadata


@torch.no_grad()
def reload_difference(path: Path, model: DecoderLM, tokens: torch.Tensor, eps: float) -> float:
    """Largest |logit difference| between ``model`` and its saved copy on ``tokens``."""
    loaded, _ = load_pruned(path)
    loaded.to(tokens.device)
    set_norm_eps(loaded, eps)
    model.eval()
    return float((loaded(tokens)[0] - model(tokens)[0]).abs().max())


def _prune(kind: Kind, config: PruneConfig, model: DecoderLM, calib_x: torch.Tensor,
           calib_y: torch.Tensor, device: torch.device, reporter: Reporter) -> dict:
    """Prune ``model`` in place; return what the method decided (JSON-able)."""
    stop = functools.partial(check_cancelled, reporter)
    bs = config.batch_size
    if kind == "comp":
        settings = BlockwiseSettings(neuron_score=config.neuron_score,
                                     mask_tuning=config.mask_tuning,
                                     tune_heads=config.tune_heads, damping=config.damping,
                                     max_scale=config.max_scale, ridge=config.ridge,
                                     batch_size=bs)
        result = comp_prune(model, calib_x, calib_y, config.ratio, settings,
                            max_neuron_fraction=config.max_neuron_fraction,
                            coarse_blocks=config.coarse_blocks, device=device,
                            check_stop=stop, log=reporter.log)
        reporter.log(f"comp: removed blocks {list(result.plan.drop)} and "
                     f"{result.plan.neurons_per_block} neurons per kept block")
        return {"removed_blocks": list(result.plan.drop),
                "neurons_per_block": result.plan.neurons_per_block,
                "block_influence": result.block_influence,
                "candidate_losses": {str(k): v for k, v in result.candidate_losses.items()},
                "blocks": [b.as_dict() for b in result.blocks]}
    if kind in ("llm-pruner", "llm-pruner-lora"):
        plan = llm_pruner_plan(model, config.ratio, config.skip_first, config.skip_last)
        stop()
        llm_pruner_prune(model, calib_x.to(device), calib_y.to(device), plan, bs)
        return {"pruned_blocks": list(plan.blocks), "share": plan.share,
                "heads_per_block": plan.heads_per_block,
                "channels_per_block": plan.channels_per_block}
    if kind == "wanda-channel":
        channels = wanda_channel_prune(model, calib_x, config.ratio, bs, device=device,
                                       check_stop=stop, score=config.channel_score)
        return {"channels_per_block": channels, "score": config.channel_score}
    if kind == "layer-prune":
        removed, scores = layer_drop_prune(model, calib_x, config.ratio, bs, device=device)
        return {"removed_blocks": removed, "block_influence": scores}
    raise ValueError(f"unknown pruning method {kind!r}")


def _recover(config: LLMPrunerLoraConfig, model: DecoderLM, train_tokens: torch.Tensor,
             seq_len: int, device: torch.device, reporter: Reporter, testbed, host) -> dict:
    """LLM-Pruner's LoRA recovery, timed and FLOP-counted (its memory is not profiled: the
    profiler would slow training down several times; the comparison is of pruning memory)."""
    step_flops = FlopCounterMode(display=False)

    def on_step(step: int, loss: float) -> None:
        reporter.metric("loss", step, loss, host.clock_s)
        check_cancelled(reporter)

    with step_flops:
        start = time.perf_counter()
        lora_recovery(model, train_tokens, steps=config.recovery_steps,
                      batch_size=config.recovery_batch_size, seq_len=seq_len,
                      rank=config.lora_rank, alpha=config.lora_alpha, lr=config.lora_lr,
                      seed=config.seed, device=device, on_step=on_step)
        seconds = time.perf_counter() - start
    testbed.compute(host, step_flops.get_total_flops())
    return {"time_s": seconds, "flops": float(step_flops.get_total_flops()),
            "steps": config.recovery_steps}
