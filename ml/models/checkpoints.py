"""Model checkpoints: tensors in safetensors, metadata in a JSON file beside them.

``save_checkpoint("dir/name", model, ...)`` writes ``dir/name.safetensors`` (weights only) and
``dir/name.json`` (config, step, metrics, and for a :class:`DecoderLM` its possibly pruned
architecture). Loading never unpickles anything. Both files are written to a temporary name and
renamed, so a reader never sees a half-written checkpoint. :func:`load_or_train` is the disk
cache of trained models (pre-trained LMs, their extensions, HAT's adapters).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock
from safetensors.torch import load_model, save_model
from torch import nn

from ml.models.transformer import DecoderLM

FORMAT = "estuary-checkpoint/1"


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(tensors, metadata)`` file paths for checkpoint ``path`` (suffix optional)."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(path: str | Path, model: nn.Module, *, config: dict | None = None,
                    step: int = 0, metrics: dict[str, float] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Save ``model``'s state and JSON metadata; return the ``.safetensors`` path.

    ``config`` (the run's flat config), ``metrics`` and ``extra`` must be JSON-able. Tied
    weights are stored once.
    """
    tensors_path, meta_path = checkpoint_paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT,
        "model_class": type(model).__name__,
        "architecture": model.architecture() if isinstance(model, DecoderLM) else None,
        "config": config or {},
        "step": step,
        "metrics": metrics or {},
        "extra": extra or {},
        "tensors": tensors_path.name,
    }
    text = json.dumps(metadata, indent=2, sort_keys=True)  # fails early if not JSON-able
    _atomic_write(tensors_path, lambda tmp: save_model(model, tmp, force_contiguous=True))
    _atomic_write(meta_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return tensors_path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of checkpoint ``path``."""
    _, meta_path = checkpoint_paths(path)
    if not meta_path.is_file():
        raise FileNotFoundError(f"no checkpoint metadata at {meta_path}")
    metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not an {FORMAT} file")
    return metadata


def load_checkpoint(path: str | Path, model: nn.Module | None = None,
                    strict: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Load checkpoint ``path`` into ``model`` and return ``(model, metadata)``.

    Without ``model`` a :class:`DecoderLM` is rebuilt from the recorded architecture (pruned
    shapes included); other models must be passed in, built with the same shapes.
    """
    tensors_path, _ = checkpoint_paths(path)
    metadata = read_metadata(path)
    if not tensors_path.is_file():
        raise FileNotFoundError(f"no checkpoint tensors at {tensors_path}")
    if model is None:
        if metadata.get("architecture") is None:
            raise ValueError(f"{tensors_path} holds a {metadata.get('model_class')}; "
                             "pass a model built with the same shapes to load it into")
        model = DecoderLM.from_architecture(metadata["architecture"])
    load_model(model, tensors_path, strict=strict)
    return model, metadata


def load_or_train(path: str | Path, train: Callable[[], tuple[nn.Module, dict[str, Any]]], *,
                  config: dict, step: int, model: nn.Module | None = None
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """The checkpoint at ``path`` if it is there, else ``train()``'s model, saved there.

    A file lock beside the checkpoint makes concurrent callers train once. ``train`` returns
    ``(model, info)`` with JSON-able ``info`` (floats are stored as metrics, the rest as
    extra); ``model`` is what to load into (see :func:`load_checkpoint`). Returns the model and
    the info (as trained, or as stored) with ``cached`` and ``path`` (the tensors file) added.
    """
    tensors_path, _ = checkpoint_paths(path)
    with FileLock(str(tensors_path.with_suffix("")) + ".lock"):
        if tensors_path.is_file():
            model, metadata = load_checkpoint(path, model)
            info = {**metadata.get("metrics", {}), **metadata.get("extra", {}), "cached": True}
        else:
            model, info = train()
            metrics = {k: v for k, v in info.items() if isinstance(v, float)}
            save_checkpoint(path, model, config=config, step=step, metrics=metrics,
                            extra={k: v for k, v in info.items() if k not in metrics})
            info = {**info, "cached": False}
    return model, {**info, "path": str(tensors_path)}
