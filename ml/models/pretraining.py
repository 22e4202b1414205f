"""Deep decoder LMs (12-16 blocks) with a local BPE tokenizer, pre-trained once, resumable, cached.

The pruning, serving and federated papers start from Llama checkpoints of 32 blocks; the
byte-level 4-block models of :mod:`ml.models.pretrained` are too shallow for their mechanisms
(one block is a quarter of the model). This module adds named sizes with the papers'
proportions (:data:`LM_SIZES`) trained on the offline ``cpython`` corpus
(:mod:`ml.data.cpython_corpus`) with a byte-level BPE trained on it (:mod:`ml.data.bpe`).
:func:`ml.models.pretrained.pretrained_lm` is unchanged; this is its sibling for these sizes.

One call, :func:`pretrained_lm_of_size`:

1. builds the corpus's documents and splits them: every tenth document (index 9, 19, ...) is
   held out (a single-document corpus: its last 10%), so the held-out text is code *and* prose
   like the training text; trains or loads the BPE and the token ids (cached);
2. loads ``<data>/models/<size>-<key>.safetensors`` if it exists (``key`` hashes the corpus,
   tokenizer, model config and training settings), else trains:
   AdamW, warm-up then cosine decay (``ml.models.pretrained``'s schedule), random windows
   drawn from a seeded CPU generator, on CUDA when it is present;
3. every ``checkpoint_every`` steps saves the model, the optimizer state, the step, the batch
   generator's state and the loss history (safetensors + JSON, written atomically, no pickle),
   so a stopped run resumes where it stopped. On the CPU a resumed run ends with the same weights,
   bit for bit, as one that was never stopped (the tests check it); on CUDA, kernels that are
   not deterministic make both runs differ in the last bits;
4. logs progress (step, loss, tokens/s, ETA) every ``log_every`` steps, and at the end
   evaluates held-out perplexity and stores it with the config next to the weights.

``python -m ml pretrain --size medium`` runs step 1-4 alone (``--quick``: a 20-step check).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from ml.data.bpe import BPETokenizer, cached_tokens, corpus_digest, train_bpe
from ml.data.images import default_data_dir
from ml.data.text import SequenceDataset, load_corpus, train_val_split
from ml.models.checkpoints import load_checkpoint, save_checkpoint
from ml.models.pretrained import PretrainSettings, _lr_at, evaluate_perplexity, unigram_loss
from ml.models.transformer import DecoderConfig, DecoderLM, lm_loss

#: Bump when the training loop changes in a way that changes the weights (part of the key).
VERSION = 1
#: Every ``HELD_OUT_EVERY``-th document (the last of each ten) is held out.
HELD_OUT_EVERY = 10


@dataclass(frozen=True)
class LMSize:
    """A named model: its corpus, tokenizer size, shape and pre-training settings."""

    name: str
    corpus: str
    vocab_size: int  # BPE tokens (the config's vocab_size)
    config: DecoderConfig
    settings: PretrainSettings
    eval_windows: int  # held-out windows of max_seq_len tokens for the final perplexity

    def describe(self, params: int | None = None) -> str:
        c = self.config
        text = (f"{self.name}: {c.n_layers} blocks, d_model {c.d_model}, {c.n_heads} heads, "
                f"d_ff {c.d_ff}, context {c.max_seq_len}, BPE {self.vocab_size} on "
                f"{self.corpus}")
        return text + (f", {params / 1e6:.2f} M parameters" if params else "")


def _size(name: str, corpus: str, vocab: int, d_model: int, layers: int, heads: int, d_ff: int,
          seq: int, steps: int, batch: int, lr: float, warmup: int, eval_windows: int) -> LMSize:
    cfg = DecoderConfig(vocab_size=vocab, d_model=d_model, n_layers=layers, n_heads=heads,
                        d_ff=d_ff, max_seq_len=seq, positional="rope")
    return LMSize(name, corpus, vocab, cfg,
                  PretrainSettings(steps=steps, batch_size=batch, lr=lr, warmup_steps=warmup),
                  eval_windows)


#: The deep sizes. ``deep-tiny`` (12 blocks, ~0.2 M parameters, pydoc) is for tests and the
#: benches' ``--quick``; ``hat-12`` is deep-tiny's shape with a 320-token context (HAT's
#: 256-token prompts, its continuation and drafts), trained for about 4 passes over pydoc;
#: ``hat-12-cpython`` (HAT's declaration v2) is deep-small's shape with the 320-token context,
#: 1,000 steps of 8 windows (0.9 pass over cpython, ~7.5 CPU-minutes), so that it is better
#: than a 2-block draft of its width trained as long (``hat-12`` was not);
#: ``deep-small`` (12 blocks, d_model 64, BPE 2,048, ~0.87 M parameters, one block ~6% of them)
#: is the 12-block cpython model a CPU pre-trains in about 6 CPU-minutes (0.7 pass over cpython);
#: ``medium`` (12 blocks, ~11.6 M) and ``large`` (16 blocks, ~34 M) are
#: trained on ``cpython`` for about 4 passes over its ~2.7 M training tokens.
LM_SIZES: dict[str, LMSize] = {s.name: s for s in (
    _size("deep-tiny", "pydoc", 512, 32, 12, 2, 96, 64, 200, 16, 5e-3, 20, 16),
    _size("hat-12", "pydoc", 512, 32, 12, 2, 96, 320, 300, 8, 5e-3, 30, 16),
    _size("hat-12-cpython", "cpython", 2048, 64, 12, 4, 176, 320, 1000, 8, 3e-3, 50, 200),
    _size("deep-small", "cpython", 2048, 64, 12, 4, 176, 128, 1000, 16, 3e-3, 50, 200),
    _size("medium", "cpython", 4096, 256, 12, 4, 704, 256, 1500, 32, 1e-3, 100, 200),
    _size("large", "cpython", 4096, 384, 16, 6, 1024, 256, 2500, 32, 6e-4, 150, 200),
)}


@dataclass
class CorpusSplits:
    """A corpus tokenized by its BPE: the held-out split is never trained on."""

    tokenizer: BPETokenizer
    train_tokens: torch.Tensor
    val_tokens: torch.Tensor
    train_text: str
    val_text: str
    digest: str  # sha256 of the documents
    description: dict


def corpus_documents(corpus: str) -> tuple[list[str], dict]:
    """The documents of ``corpus`` (``cpython``: one per source file) and what they are."""
    if corpus == "cpython":
        from ml.data.cpython_corpus import corpus_description, cpython_documents

        return cpython_documents(), {"corpus": "cpython", **corpus_description()}
    return [load_corpus(corpus)], {"corpus": corpus}


def split_documents(documents: list[str]) -> tuple[list[str], list[str]]:
    """``(train, held-out)``: every tenth document held out; one document: its last 10%."""
    if len(documents) == 1:
        train, val = train_val_split(documents[0], 1 / HELD_OUT_EVERY)
        return [train], [val]
    held = [d for i, d in enumerate(documents) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    train = [d for i, d in enumerate(documents) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    return train, held


def corpus_splits(corpus: str, vocab_size: int, cache_dir: str | Path | None = None,
                  log: Callable[[str], None] | None = None) -> CorpusSplits:
    """Tokenizer and token ids of ``corpus``'s splits (the BPE is fitted on the training split
    only; both are cached under ``cache_dir``, default ``<data>/tokenizers``)."""
    folder = Path(cache_dir) if cache_dir is not None else default_data_dir() / "tokenizers"
    key = (corpus, vocab_size, str(folder.resolve()))
    if corpus in BUILT_IN_CORPORA and key in _SPLITS:  # the files of a path may change
        return _SPLITS[key]
    documents, description = corpus_documents(corpus)
    train_docs, val_docs = split_documents(documents)
    tokenizer = train_bpe(train_docs, vocab_size, folder, log=log)
    splits = CorpusSplits(tokenizer, cached_tokens(tokenizer, train_docs, folder),
                          cached_tokens(tokenizer, val_docs, folder), "\n\n".join(train_docs),
                          "\n\n".join(val_docs), corpus_digest(documents), description)
    if corpus in BUILT_IN_CORPORA:
        _SPLITS.clear()
        _SPLITS[key] = splits
    return splits


BUILT_IN_CORPORA = ("pydoc", "cpython")
_SPLITS: dict[tuple, CorpusSplits] = {}  # this process's last built-in corpus (benches reuse it)


def resolve_device(device: str | None) -> torch.device:
    """``cuda`` when present unless ``device`` says otherwise."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pretrained_lm_of_size(size: str | LMSize, *, corpus: str | None = None,
                          steps: int | None = None, seed: int = 0,
                          cache_dir: str | Path | None = None, device: str | None = None,
                          checkpoint_every: int = 50, log_every: int = 10,
                          eval_windows: int | None = None, stop_after_s: float | None = None,
                          on_step: Callable[[int, float], None] | None = None,
                          log: Callable[[str], None] | None = None
                          ) -> tuple[DecoderLM, BPETokenizer, dict]:
    """``(model, tokenizer, info)`` of size ``size`` pre-trained on ``corpus`` (its default
    unless given), trained now or loaded from the cache (see the module docstring).

    ``cache_dir`` is the data folder to use (default ``$ESTUARY_DATA_DIR``): models go to its
    ``models/``, tokenizers and token ids to its ``tokenizers/``. ``stop_after_s`` stops the
    training after that many seconds of this call, saving its state, and raises
    :class:`PretrainingStopped` (call again to resume). ``on_step(step, loss)`` runs after every
    step. ``info`` holds ``val_perplexity``, ``val_loss``, ``unigram_perplexity``, ``params``,
    ``config``, ``settings``, ``tokens_per_s``, ``train_time_s``, ``device``, ``cached``,
    ``resumed_from`` and ``path``. The model is returned on the CPU in eval mode.
    """
    spec = LM_SIZES[size] if isinstance(size, str) else size
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    log = log or _stderr
    settings = dataclasses.replace(spec.settings, seed=seed,
                                   **({"steps": steps} if steps is not None else {}))
    if settings.warmup_steps >= settings.steps:
        settings = dataclasses.replace(settings, warmup_steps=max(1, settings.steps // 10))
    corpus = corpus or spec.corpus
    root = Path(cache_dir) if cache_dir is not None else default_data_dir()
    splits = corpus_splits(corpus, spec.vocab_size, root / "tokenizers", log=log)
    cfg = dataclasses.replace(spec.config, vocab_size=splits.tokenizer.vocab_size)
    windows = eval_windows or spec.eval_windows
    key = hashlib.sha256(json.dumps({
        "corpus": splits.digest, "tokenizer": splits.tokenizer.sha256, "config": cfg.to_dict(),
        "settings": dataclasses.asdict(settings), "eval_windows": windows, "version": VERSION,
    }, sort_keys=True).encode()).hexdigest()[:16]
    folder = root / "models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}-{key}"
    with FileLock(str(path) + ".lock"):
        if path.with_suffix(".safetensors").is_file():
            model, meta = load_checkpoint(path)
            info = {**meta["metrics"], **meta["extra"], "cached": True}
        else:
            model, info = _train(spec, cfg, settings, splits, path, resolve_device(device),
                                 windows, checkpoint_every, log_every, stop_after_s, on_step,
                                 log)
            metrics = {k: v for k, v in info.items() if isinstance(v, float)}
            save_checkpoint(path, model, config={"size": spec.name, "corpus": corpus,
                                                 **dataclasses.asdict(settings)},
                            step=settings.steps, metrics=metrics,
                            extra={k: v for k, v in info.items() if k not in metrics})
            _remove_resume_state(path)
            info = {**info, "cached": False}
            log(f"pretrain {spec.name}: saved {path}.safetensors (held-out perplexity "
                f"{info['val_perplexity']:.2f})")
    return model.eval(), splits.tokenizer, {**info, "path": str(path) + ".safetensors"}


class PretrainingStopped(RuntimeError):
    """Pre-training stopped on its time limit with its state saved; calling again resumes."""


# -- training with resumable state ----------------------------------------------------------------

def _train(spec: LMSize, cfg: DecoderConfig, s: PretrainSettings, splits: CorpusSplits,
           path: Path, device: torch.device, eval_windows: int, checkpoint_every: int,
           log_every: int, stop_after_s: float | None,
           on_step: Callable[[int, float], None] | None,
           log: Callable[[str], None]) -> tuple[DecoderLM, dict]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        model = DecoderLM(cfg)
    model.to(device)
    opt = _optimizer(model, s)
    data = SequenceDataset(splits.train_tokens, cfg.max_seq_len)
    batches = torch.Generator().manual_seed(s.seed)
    state = {"step": 0, "losses": [], "train_time_s": 0.0}
    if _load_resume_state(path, model, opt, batches, state, device):
        log(f"pretrain {spec.name}: resuming at step {state['step']}/{s.steps}")
    resumed_from = state["step"]
    params = model.num_parameters()
    log(f"pretrain {spec.describe(params)}; {len(splits.train_tokens):,} training tokens, "
        f"{s.steps} steps of {s.batch_size}x{cfg.max_seq_len} tokens on {device}")
    tokens_per_step = s.batch_size * cfg.max_seq_len
    call_start = last_log = time.perf_counter()
    last_cpu = time.process_time()
    logged_step, window = state["step"], []
    model.train()
    while state["step"] < s.steps:
        step, step_start = state["step"], time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, s)
        x, y = data.sample_batch(s.batch_size, batches)
        loss = lm_loss(model(x.to(device))[0], y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        value = loss.item()
        state["step"] = step + 1
        state["losses"].append(value)
        window.append(value)
        now = time.perf_counter()
        state["train_time_s"] += now - step_start
        if state["step"] % log_every == 0 or state["step"] == s.steps:
            done = tokens_per_step * (state["step"] - logged_step)
            rate = done / max(now - last_log, 1e-9)
            cpu = time.process_time()
            eta = (s.steps - state["step"]) * tokens_per_step / max(rate, 1e-9)
            log(f"pretrain {spec.name}: step {state['step']}/{s.steps} loss "
                f"{sum(window) / len(window):.3f} lr {_lr_at(step, s):.2e} "
                f"{rate:,.0f} tokens/s ({done / max(cpu - last_cpu, 1e-9):,.0f} per CPU-second) "
                f"ETA {_duration(eta)}")
            last_log, last_cpu, logged_step, window = now, cpu, state["step"], []
        if on_step is not None:
            on_step(state["step"], value)
        if state["step"] % checkpoint_every == 0 and state["step"] < s.steps:
            _save_resume_state(path, model, opt, batches, state)
        if stop_after_s is not None and now - call_start >= stop_after_s and \
                state["step"] < s.steps:
            _save_resume_state(path, model, opt, batches, state)
            raise PretrainingStopped(
                f"pre-training of {spec.name} stopped at step {state['step']}/{s.steps} after "
                f"{now - call_start:.0f} s; its state is saved, run it again to resume")
    model.eval()
    val_loss = evaluate_perplexity(model, splits.val_tokens[: eval_windows * cfg.max_seq_len + 1]
                                   .to(device), cfg.max_seq_len)
    uni = unigram_loss(splits.train_tokens, splits.val_tokens, cfg.vocab_size)
    trained_steps = s.steps - resumed_from
    info = {
        "val_loss": val_loss, "val_perplexity": math.exp(val_loss),
        "unigram_perplexity": math.exp(uni), "final_train_loss": state["losses"][-1],
        "train_time_s": state["train_time_s"],
        "tokens_per_s": (tokens_per_step * trained_steps / state["train_time_s"]
                         if trained_steps and state["train_time_s"] > 0 else 0.0),
        "steps": s.steps, "resumed_from": resumed_from, "params": params,
        "size": spec.name, "config": cfg.to_dict(), "settings": dataclasses.asdict(s),
        "tokenizer": splits.tokenizer.to_dict(), "corpus": splits.description,
        "train_tokens": len(splits.train_tokens), "val_tokens": len(splits.val_tokens),
        "eval_windows": eval_windows, "device": str(device),
        "threads": torch.get_num_threads(),
        "loss_curve": state["losses"][:: max(1, len(state["losses"]) // 200)],
    }
    return model.cpu(), info


def _optimizer(model: DecoderLM, s: PretrainSettings) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=s.lr, betas=(0.9, 0.95))


def _resume_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".resume.json"), path.with_name(path.name + ".resume")


def _save_resume_state(path: Path, model: DecoderLM, opt: torch.optim.Optimizer,
                       batches: torch.Generator, state: dict) -> None:
    """Tensors to ``<path>.resume-<step>.safetensors``, then the JSON naming them (the commit
    point: a crash in between leaves the previous state in force), then old tensors go."""
    meta_path, stem = _resume_paths(path)
    tensors = {f"model.{k}": v.detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    scalars: dict[str, dict] = {}
    for index, values in opt_state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    tensors["rng.batches"] = batches.get_state()
    tensor_file = stem.with_name(f"{stem.name}-{state['step']}.safetensors")
    tmp = tensor_file.with_name(tensor_file.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, tensor_file)
    meta = {"step": state["step"], "losses": state["losses"],
            "train_time_s": state["train_time_s"], "tensors": tensor_file.name,
            "param_groups": opt_state["param_groups"], "optim_scalars": scalars,
            "version": VERSION}
    tmp_meta = meta_path.with_name(meta_path.name + ".tmp")
    tmp_meta.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp_meta, meta_path)
    for old in stem.parent.glob(f"{stem.name}-*.safetensors"):
        if old != tensor_file:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()


def _load_resume_state(path: Path, model: DecoderLM, opt: torch.optim.Optimizer,
                       batches: torch.Generator, state: dict, device: torch.device) -> bool:
    meta_path, stem = _resume_paths(path)
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    tensors = load_file(str(stem.parent / meta["tensors"]))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    model.to(device)
    opt_state: dict = {"state": {}, "param_groups": meta["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            opt_state["state"].setdefault(int(index), {})[name] = value
    for index, values in meta["optim_scalars"].items():
        opt_state["state"].setdefault(int(index), {}).update(values)
    opt.load_state_dict(opt_state)
    batches.set_state(tensors["rng.batches"])
    state.update(step=meta["step"], losses=meta["losses"], train_time_s=meta["train_time_s"])
    return True


def _remove_resume_state(path: Path) -> None:
    meta_path, stem = _resume_paths(path)
    for old in [meta_path, *stem.parent.glob(f"{stem.name}-*.safetensors")]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
