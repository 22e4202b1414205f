"""Token choice and speculative-sampling verification (Leviathan et al., arXiv 2211.17192).

Exactness rests on this module: a draft token ``x`` drawn from ``q`` is accepted with probability
``min(1, p(x) / q(x))``; at the first rejection the token is drawn from ``norm(max(0, p - q))``;
if every draft is accepted and a further target distribution is available, a bonus token is drawn
from it. Each committed token is then distributed exactly as the target model's ``p``. With
``temperature == 0`` (greedy) ``p`` and ``q`` are one-hot at their argmax, so the same rule
accepts a draft iff it is the target's argmax and otherwise emits the target's argmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Distributions ``[..., V]`` of ``logits``: softmax at ``temperature``, one-hot if 0."""
    logits = logits.double()
    if temperature == 0.0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).double()
    return torch.softmax(logits / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One token from distribution ``probs`` ``[V]`` (deterministic for a one-hot row); the
    generator is a CPU one, so the row is drawn on the CPU."""
    return int(torch.multinomial(probs.float().cpu(), 1, generator=generator).item())


@dataclass(frozen=True)
class Verdict:
    """Outcome of verifying drafts: ``accepted`` of them kept, then ``token`` (``None`` when
    every draft was accepted and no distribution for a bonus token was given)."""

    accepted: int
    token: int | None


def verify(drafts: list[int], q: torch.Tensor, p: torch.Tensor,
           generator: torch.Generator) -> Verdict:
    """Standard speculative sampling of ``drafts`` (drawn from rows of ``q`` ``[n, V]``) against
    target rows ``p`` ``[n or n + 1, V]``; row ``i`` of both is the distribution of draft ``i``.

    ``p`` with ``n + 1`` rows yields a bonus token on full acceptance; with ``n`` rows it does
    not (parallel drafting: the next draft is verified by the next round instead).
    """
    n = len(drafts)
    if q.shape[0] != n or p.shape[0] not in (n, n + 1):
        raise ValueError(f"{n} drafts need q with {n} rows and p with {n} or {n + 1}, got "
                         f"{tuple(q.shape)} and {tuple(p.shape)}")
    for i, x in enumerate(drafts):
        ratio = float(p[i, x]) / max(float(q[i, x]), 1e-300)
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if u < min(1.0, ratio):
            continue
        residual = (p[i] - q[i]).clamp_min(0.0)
        total = float(residual.sum())
        # total == 0 only if p == q, where rejection has probability 0; guard rounding anyway.
        return Verdict(i, sample(residual / total if total > 0 else p[i], generator))
    return Verdict(n, sample(p[n], generator) if p.shape[0] == n + 1 else None)
