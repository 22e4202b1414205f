"""What a client's model costs: training memory, inference FLOPs and latency, message sizes."""
from __future__ import annotations

import statistics
import time

import torch
from torch.nn import functional as F

from ml.algorithms.federated_fine_tuning.adapters import LoRAState
from ml.algorithms.federated_fine_tuning.task import TopicClassifier
from ml.models.lora import remove_lora


def deployed_params(model: TopicClassifier) -> int:
    """Parameters the classifier uses (the decoder's unused LM head excluded)."""
    skip = {id(model.decoder.head.weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def training_memory_bytes(model: TopicClassifier, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes to train on batch (x, y): fp32 weights, gradient and two AdamW moments of every
    trainable tensor, and the activations autograd saves for the backward (measured)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(x), y)
    return 4 * deployed_params(model) + 3 * 4 * trainable + sum(saved.values())


def merged(model: TopicClassifier) -> TopicClassifier:
    """The model with its adapters folded into the weights (what a client deploys)."""
    remove_lora(model, merge=True)
    return model


@torch.no_grad()
def host_latency_ms(model: TopicClassifier, x: torch.Tensor, repeats: int = 5) -> float:
    """Median host wall time of one forward pass on ``x`` (milliseconds)."""
    model.eval()
    model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def state_bytes(state: LoRAState | dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * 4 for t in state.values())
