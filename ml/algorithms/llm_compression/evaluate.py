"""What a compressed model is worth: quality (perplexity, next-word choice) and size/speed.

Quality comes from ml.eval.lm on the corpus's held-out split (the last 10%, never seen by the
pre-training, the calibration or the recovery). Size and speed are measured on the model as it
is, pruned shapes included: parameter count, forward FLOPs of one ``seq_len``-token sequence
(torch's FLOP counter, matrix multiplies), and the host's latency for that forward pass (median
of ``repeats`` runs after two warm-ups, batch 1).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ml.eval.lm import ChoiceItem, choice_accuracy, held_out_perplexity
from ml.models.flops import count_flops
from ml.models.transformer import DecoderLM


@dataclass(frozen=True)
class ModelReport:
    perplexity: float
    accuracy: float
    params: int
    flops: int
    latency_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def forward_latency_ms(model: DecoderLM, seq_len: int, repeats: int,
                       device: torch.device) -> float:
    """Median wall time (ms) of one forward pass over a ``[1, seq_len]`` input."""
    idx = torch.zeros(1, seq_len, dtype=torch.long, device=device)
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(idx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def evaluate_model(model: DecoderLM, val_tokens: torch.Tensor, task: list[ChoiceItem], *,
                   seq_len: int, eval_windows: int | None, latency_repeats: int,
                   device: torch.device) -> ModelReport:
    """Every quality, size and speed figure of ``model`` (which must already be on ``device``)."""
    model.eval()
    return ModelReport(
        perplexity=held_out_perplexity(model, val_tokens, seq_len, max_windows=eval_windows),
        accuracy=choice_accuracy(model, task),
        params=model.num_parameters(),
        flops=count_flops(model, torch.zeros(1, seq_len, dtype=torch.long, device=device)),
        latency_ms=forward_latency_ms(model, seq_len, latency_repeats, device),
    )
