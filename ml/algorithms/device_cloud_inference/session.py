"""One request's real computation under HAT (and under the plain U-shaped split, gamma = 0).

A :class:`HATSession` holds the token sequence of one device's request and every KV cache of it:
on the device the input submodel's (shared by the draft and the target path, since both start
with the same input submodel), the adapter's and the draft path's output submodel's, and the
target path's output submodel's; in the cloud the middle submodel's (:class:`CloudMiddle`, one
cache per device). Every method does real forward passes and returns the :class:`Op` s it ran so
the clock can charge them; *when* they run is the event engine's business (:mod:`.engine`).

Sequence bookkeeping: ``seq`` holds the committed tokens (``seq[:committed]``) followed by
speculative drafts. The cloud has processed positions ``[0, committed - 1)``: the last committed
token is *pending*, its input hidden state travels with the next round's drafts. A round uploads
the input-submodel hidden states of positions ``committed - 1 .. len(seq) - 1`` and gets one
target distribution per position back. Rolling back to an accepted prefix truncates every cache
(cloud caches are truncated by the request's position, which tells the cloud the accepted length).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ml.algorithms.device_cloud_inference.adapter import Adapter
from ml.algorithms.device_cloud_inference.cost import Op
from ml.algorithms.device_cloud_inference.partition import USplit
from ml.algorithms.device_cloud_inference.sampling import probabilities, sample, verify
from ml.models.transformer import Cache, cache_length, truncate_cache


def _truncate(cache: Cache | None, length: int) -> Cache | None:
    if cache is None or cache_length(cache) <= length:
        return cache
    return truncate_cache(cache, length) if length > 0 else None


class CloudMiddle:
    """The cloud's middle submodel with one KV cache per device (the cloud holds no tokens)."""

    def __init__(self, split: USplit):
        self.split = split
        self.caches: dict[str, Cache | None] = {}

    @torch.no_grad()
    def forward(self, device: str, h: torch.Tensor, pos: int) -> tuple[torch.Tensor, Op]:
        """Middle blocks over hidden states ``h`` ``[1, T, d]`` at positions ``pos..``; the cache
        is first rolled back to ``pos`` positions (the device's accepted prefix)."""
        cache = _truncate(self.caches.get(device), pos)
        if cache_length(cache) != pos:
            raise ValueError(f"{device}: the cloud holds {cache_length(cache)} positions, the "
                             f"request starts at {pos}")
        out, self.caches[device] = self.split.middle_forward(h, cache, pos)
        return out, Op("middle", h.shape[1], pos)

    def release(self, device: str) -> None:
        self.caches.pop(device, None)


@dataclass
class RoundStats:
    """Speculative-decoding counters of one request."""

    rounds: int = 0
    drafted: int = 0  # drafts sent for verification
    accepted: int = 0
    committed_in_rounds: int = 0
    lookahead_drafted: int = 0  # drafts made while a verification was in flight
    lookahead_used: int = 0  # of those, verified by a later round (not discarded)


@dataclass
class HATSession:
    """Device side of one request: ``prompt`` ``[P]`` token ids; see the module docstring."""

    split: USplit
    adapter: Adapter | None
    prompt: list[int]
    temperature: float
    generator: torch.Generator
    draft_window: int | None = None
    seq: list[int] = field(default_factory=list)
    committed: int = 0
    stats: RoundStats = field(default_factory=RoundStats)

    def __post_init__(self):
        self.seq = list(self.prompt)
        self.committed = len(self.prompt)
        self.h_in: torch.Tensor | None = None  # [1, positions, d] input hidden states
        self.in_cache: Cache | None = None
        self.ad_cache: Cache | None = None
        self.dout_cache: Cache | None = None
        self.out_cache: Cache | None = None
        self.q_rows: dict[int, torch.Tensor] = {}  # position -> draft distribution of its token
        self._draft_row: torch.Tensor | None = None  # draft distribution after the draft caches
        self.draft_start: int | None = None  # first position the draft caches hold

    # -- device: input submodel --------------------------------------------------------------
    @property
    def input_length(self) -> int:
        return 0 if self.h_in is None else self.h_in.shape[1]

    @torch.no_grad()
    def input_pass(self, upto: int | None = None) -> list[Op]:
        """Input submodel over ``seq[input_length:upto]`` (default: the whole sequence)."""
        upto = len(self.seq) if upto is None else upto
        start = self.input_length
        if upto <= start:
            return []
        tokens = torch.tensor([self.seq[start:upto]], device=self.split.model.embed.weight.device)
        h, self.in_cache = self.split.input_forward(tokens, self.in_cache, start)
        self.h_in = h if self.h_in is None else torch.cat([self.h_in, h], dim=1)
        return [Op("input", upto - start, start)]

    def hidden_states(self, start: int, end: int) -> torch.Tensor:
        """Input hidden states of positions ``start..end - 1`` (what is uploaded)."""
        if end > self.input_length:
            raise ValueError(f"positions up to {end} need the input pass first")
        return self.h_in[:, start:end]

    # -- device: draft model (input -> adapter -> output) -------------------------------------
    @torch.no_grad()
    def draft_pass(self, upto: int | None = None) -> list[Op]:
        """Bring the adapter and draft output caches up to position ``upto`` (default: the
        whole sequence); the draft distribution of the position after it is kept. Returns the
        ops (input pass included). The first call starts the draft caches ``draft_window``
        positions before ``upto`` (the draft model's prompt window, ours [I])."""
        upto = len(self.seq) if upto is None else upto
        ops = self.input_pass(upto)
        if self.draft_start is None:
            self.draft_start = max(0, upto - self.draft_window) if self.draft_window else 0
        start, end = self.draft_length, upto
        if end <= start:
            return ops
        model = self.split.model
        rope = model.rotary(end - start, start, self.h_in.device, self.h_in.dtype)
        h, self.ad_cache = self.adapter(self.h_in[:, start:end], rope, self.ad_cache)
        logits, self.dout_cache = self.split.output_forward(h, self.dout_cache, start, 1)
        self._draft_row = probabilities(logits[0, -1], self.temperature)
        return ops + [Op("adapter", end - start, cache_length(self.ad_cache) - (end - start)),
                      Op("output", end - start, cache_length(self.dout_cache) - (end - start), 1)]

    @property
    def draft_length(self) -> int:
        """Position up to which the draft caches are filled."""
        return (self.draft_start or 0) + cache_length(self.ad_cache)

    @torch.no_grad()
    def draft_step(self) -> list[Op]:
        """Draft one token with the on-device draft model and append it to ``seq``."""
        if self.adapter is None:
            raise ValueError("this session has no adapter to draft with")
        ops = self.draft_pass()
        if self._draft_row is None or self.draft_length != len(self.seq):
            raise RuntimeError("the draft caches do not cover the sequence")
        self.q_rows[len(self.seq)] = self._draft_row
        self.seq.append(sample(self._draft_row, self.generator))
        return ops

    @property
    def drafts(self) -> int:
        """Speculative tokens after the committed prefix."""
        return len(self.seq) - self.committed

    # -- device: target path (output submodel over the cloud's hidden states) -----------------
    @torch.no_grad()
    def target_pass(self, h_mid: torch.Tensor, pos: int, logits_for: int
                    ) -> tuple[torch.Tensor | None, list[Op]]:
        """Output submodel over the middle's hidden states at positions ``pos..``; returns the
        target distributions of the last ``logits_for`` positions."""
        cache = _truncate(self.out_cache, pos)
        logits, self.out_cache = self.split.output_forward(h_mid, cache, pos, logits_for)
        p = None if logits is None else probabilities(logits[0], self.temperature)
        return p, [Op("output", h_mid.shape[1], pos, logits_for)]

    def commit_first(self, p_last: torch.Tensor) -> int:
        """The first generated token, drawn from the target's last prefill distribution."""
        token = sample(p_last, self.generator)
        self.seq = self.seq[:self.committed] + [token]
        self.committed += 1
        return token

    def round_request(self) -> tuple[torch.Tensor, int]:
        """Hidden states (input submodel) of the pending token and the drafts, and their first
        position: what a decoding round uploads. Needs :meth:`input_pass` first."""
        pos = self.committed - 1
        return self.hidden_states(pos, len(self.seq)), pos

    def finish_round(self, p: torch.Tensor, sent_until: int) -> list[int]:
        """Verify the drafts sent up to position ``sent_until`` (exclusive) against target rows
        ``p`` (one per uploaded position), plus the first look-ahead draft if every sent draft
        is accepted; roll back to the accepted prefix. Returns the newly committed tokens."""
        start = self.committed
        sent = self.seq[start:sent_until]
        rows = [self.q_rows[i] for i in range(start, sent_until)]
        lookahead = len(self.seq) > sent_until
        if lookahead:  # verify the first look-ahead draft with the bonus row (no bonus token)
            sent = sent + [self.seq[sent_until]]
            rows.append(self.q_rows[sent_until])
        q = torch.stack(rows) if rows else p.new_zeros((0, p.shape[-1]))
        verdict = verify(sent, q, p, self.generator)
        self.stats.rounds += 1
        self.stats.drafted += sent_until - start
        self.stats.accepted += min(verdict.accepted, sent_until - start)
        if lookahead:
            self.stats.lookahead_drafted += len(self.seq) - sent_until
        if verdict.token is None:  # every draft, the look-ahead one included, accepted
            self.stats.lookahead_used += len(self.seq) - sent_until
            new = sent
            self.committed += len(new)
        else:
            new = sent[:verdict.accepted] + [verdict.token]
            self.rollback(start + verdict.accepted)
            self.seq.append(verdict.token)
            self.committed = len(self.seq)
        self.stats.committed_in_rounds += len(new)
        return new

    def rollback(self, length: int) -> None:
        """Drop every token and cache entry from position ``length`` on (device side)."""
        self.seq = self.seq[:length]
        self.committed = min(self.committed, length)
        if self.h_in is not None:
            self.h_in = self.h_in[:, :length] if length else None
        self.in_cache = _truncate(self.in_cache, length)
        draft = max(0, length - (self.draft_start or 0))
        self.ad_cache = _truncate(self.ad_cache, draft)
        self.dout_cache = _truncate(self.dout_cache, draft)
        self.out_cache = _truncate(self.out_cache, length)
        self.q_rows = {i: r for i, r in self.q_rows.items() if i < length}
        self._draft_row = None

    def generated(self) -> list[int]:
        return self.seq[len(self.prompt):self.committed]


def generate(split: USplit, adapter: Adapter | None, prompt: list[int], new_tokens: int,
             gamma: int, temperature: float, generator: torch.Generator, lookahead: int = 0,
             chunk: int | None = None, draft_window: int | None = None
             ) -> tuple[list[int], HATSession]:
    """HAT decoding without a clock (for tests and checks): the same session steps the serving
    engine runs, in one fixed order. ``lookahead`` drafts are made "while the verification is
    in flight" every round; ``chunk`` splits the prefill."""
    session = HATSession(split, adapter, list(prompt), temperature, generator, draft_window)
    cloud = CloudMiddle(split)
    chunk = chunk or len(prompt)
    p_last = None
    for start in range(0, len(prompt), chunk):
        end = min(start + chunk, len(prompt))
        session.input_pass(end)
        h_mid, _ = cloud.forward("d", session.hidden_states(start, end), start)
        p_last, _ = session.target_pass(h_mid, start, 1 if end == len(prompt) else 0)
    session.commit_first(p_last[-1])
    while len(session.generated()) < new_tokens:
        while session.drafts < gamma:
            session.draft_step()
        session.input_pass()
        h, pos = session.round_request()
        sent_until = len(session.seq)
        for _ in range(lookahead):
            session.draft_step()
        h_mid, _ = cloud.forward("d", h, pos)
        p, _ = session.target_pass(h_mid, pos, h.shape[1])
        session.finish_round(p, sent_until)
    return session.generated()[:new_tokens], session
