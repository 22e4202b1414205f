"""What each device does for one request, under HAT and under each baseline, as engine processes.

Every protocol is a generator for :class:`ml.algorithms.hat.engine.Engine`: it runs the real
forward passes (which decide every token), yields the emulated time they take on the device,
and talks to the cloud through :class:`Request` s whose real work runs when the cloud's batch
starts. Each writes when its tokens were committed into a :class:`Trace`.

- :func:`hat` -- prefill in pipelined chunks of hidden states (size chosen per device from the
  cloud's current load), then rounds: draft ``gamma`` tokens on the device (input -> adapter ->
  output), upload their input hidden states, keep drafting while the verification is in flight,
  run the output submodel on the returned hidden states and verify by speculative sampling.
- :func:`hat` with ``gamma=0``, no adapter, one chunk: plain U-shaped split inference, one
  hidden-state round trip per token.
- :func:`cloud_only`: prompt tokens up, the cloud runs the whole LLM and streams tokens down.
- :func:`device_cloud_sd`: a separate small draft LM on the device drafts ``gamma`` tokens and
  uploads the raw token ids (and, when sampling, the draft distributions the cloud needs for the
  residual; ours [I]); the cloud runs the whole LLM over them, verifies, and returns the number
  accepted and the next token.

Message kinds in the traffic ledger: ``prefill`` (up to the first token) and ``decode``.
Message sizes (ours [I]): hidden states are ``d_model`` values of the served model's width and
precision per position; a token id is 4 bytes; a verdict is 8 bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ml.algorithms.hat.adapter import Adapter
from ml.algorithms.hat.chunking import choose_chunk_size, chunk_bounds
from ml.algorithms.hat.cost import Op, ServedModels, pass_seconds
from ml.algorithms.hat.engine import Compute, Engine, Poll, Request, Upload, Wait
from ml.algorithms.hat.partition import USplit
from ml.algorithms.hat.sampling import probabilities, sample, verify
from ml.algorithms.hat.session import CloudMiddle, HATSession, RoundStats
from ml.models.transformer import Cache, DecoderLM, cache_length, truncate_cache
from ml.testbed import EmulatedDevice

TOKEN_BYTES = 4
VERDICT_BYTES = 8


@dataclass
class Trace:
    """One request's timeline: when it started and when each generated token was committed."""

    device: str
    start_s: float = 0.0
    token_times: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    chunk_size: int | None = None
    predicted_ttft_s: float | None = None
    stats: RoundStats | None = None

    def commit(self, now: float, tokens: list[int], limit: int) -> None:
        room = limit - len(self.tokens)
        self.tokens += tokens[:room]
        self.token_times += [now] * min(room, len(tokens))

    @property
    def ttft_s(self) -> float:
        return self.token_times[0] - self.start_s

    @property
    def tbt_s(self) -> float:
        """Mean time between output tokens after the first."""
        if len(self.token_times) < 2:
            return 0.0
        return (self.token_times[-1] - self.token_times[0]) / (len(self.token_times) - 1)


@dataclass
class Context:
    """What every protocol needs: the engine, the clock's model shapes and request settings."""

    engine: Engine
    served: ServedModels
    device: EmulatedDevice
    prompt: list[int]
    new_tokens: int
    temperature: float
    generator: torch.Generator

    def seconds(self, ops: list[Op]) -> float:
        """Emulated device time of real passes ``ops`` (one roofline pass each)."""
        return sum(pass_seconds(self.device, self.served.charge(op)) for op in ops)

    def hidden_bytes(self, tokens: int) -> int:
        return self.served.llm.hidden_bytes(tokens)


def _middle_request(ctx: Context, cloud: CloudMiddle, h: torch.Tensor, pos: int, kind: str,
                    logits_for: int) -> Request:
    name, tokens = ctx.device.name, h.shape[1]

    def serve():
        h_mid, _ = cloud.forward(name, h, pos)
        return (h_mid, pos, logits_for), ctx.hidden_bytes(tokens), None
    return Request(name, kind, tokens, [ctx.served.charge(Op("middle", tokens, pos))], serve)


def hat(ctx: Context, split: USplit, adapter: Adapter | None, cloud: CloudMiddle, gamma: int,
        chunk_size: int | None, parallel_drafting: bool, trace: Trace,
        draft_window: int | None = None):
    """HAT's device process (``gamma=0``, ``adapter=None``, one chunk: plain U-split)."""
    session = HATSession(split, adapter, list(ctx.prompt), ctx.temperature, ctx.generator,
                         draft_window)
    trace.start_s = ctx.engine.now
    prompt_len = len(ctx.prompt)
    if chunk_size is None:
        window = min(prompt_len, draft_window or prompt_len) if adapter is not None else 0
        chunk_size, trace.predicted_ttft_s = choose_chunk_size(
            prompt_len, ctx.device, ctx.engine.testbed, ctx.served, max(1, ctx.engine.load),
            window)
    trace.chunk_size = chunk_size
    bounds = chunk_bounds(prompt_len, chunk_size)
    # Prefill: chunk k+1's input pass and upload overlap chunk k's cloud pass (links are queues).
    p_last, outstanding = None, len(bounds)

    def consume(reply):
        h_mid, pos, logits_for = reply
        p, ops = session.target_pass(h_mid, pos, logits_for)
        return p, ctx.seconds(ops)
    for i, (start, end) in enumerate(bounds):
        yield Compute(ctx.seconds(session.input_pass(end)))
        yield Upload(_middle_request(ctx, cloud, session.hidden_states(start, end), start,
                                     "prefill", 1 if i == len(bounds) - 1 else 0),
                     ctx.hidden_bytes(end - start))
        while (reply := (yield Poll())) is not None:
            p_last, seconds = consume(reply)
            outstanding -= 1
            yield Compute(seconds)
    if adapter is not None:  # the draft model's prefill (its window), while the cloud works
        yield Compute(ctx.seconds(session.draft_pass(prompt_len)))
    for _ in range(outstanding):
        p_last, seconds = consume((yield Wait()))
        yield Compute(seconds)
    trace.commit(ctx.engine.now, [session.commit_first(p_last[-1])], ctx.new_tokens)
    # Decoding rounds.
    while len(trace.tokens) < ctx.new_tokens:
        while session.drafts < gamma:
            yield Compute(ctx.seconds(session.draft_step()))
        yield Compute(ctx.seconds(session.input_pass()))
        h, pos = session.round_request()
        sent_until = len(session.seq)
        yield Upload(_middle_request(ctx, cloud, h, pos, "decode", h.shape[1]),
                     ctx.hidden_bytes(h.shape[1]))
        reply = None
        if parallel_drafting and adapter is not None:
            while (reply := (yield Poll())) is None and len(session.seq) - sent_until < gamma:
                yield Compute(ctx.seconds(session.draft_step()))
        if reply is None:
            reply = yield Wait()
        p, seconds = consume(reply)
        yield Compute(seconds)
        trace.commit(ctx.engine.now, session.finish_round(p, sent_until), ctx.new_tokens)
    trace.stats = session.stats
    cloud.release(ctx.device.name)


def cloud_only(ctx: Context, llm: DecoderLM, trace: Trace):
    """Cloud-only inference: the prompt's token ids go up, generated tokens stream down."""
    trace.start_s = ctx.engine.now
    name = ctx.device.name
    state: dict = {"cache": None, "made": 0}
    model_device = llm.embed.weight.device

    def step(tokens: list[int], pos: int) -> Request:
        @torch.no_grad()
        def serve():
            logits, state["cache"] = llm(torch.tensor([tokens], device=model_device),
                                         state["cache"], use_cache=True)
            token = sample(probabilities(logits[0, -1], ctx.temperature), ctx.generator)
            state["made"] += 1
            follow = step([token], pos + len(tokens)) if state["made"] < ctx.new_tokens else None
            return token, TOKEN_BYTES, follow
        return Request(name, "prefill" if pos == 0 else "decode", len(tokens),
                       [ctx.served.charge(Op("full", len(tokens), pos, 1))], serve)

    yield Upload(step(list(ctx.prompt), 0), TOKEN_BYTES * len(ctx.prompt))
    while len(trace.tokens) < ctx.new_tokens:
        token = yield Wait()
        trace.commit(ctx.engine.now, [token], ctx.new_tokens)


class _DraftLM:
    """The device's separate draft LM with its cache (device-cloud SD)."""

    def __init__(self, model: DecoderLM, temperature: float):
        self.model, self.temperature = model, temperature
        self.cache: Cache | None = None
        self.row: torch.Tensor | None = None

    @torch.no_grad()
    def catch_up(self, seq: list[int]) -> list[Op]:
        start = cache_length(self.cache)
        if start >= len(seq):
            return []
        x = torch.tensor([seq[start:]], device=self.model.embed.weight.device)
        logits, self.cache = self.model(x, self.cache, use_cache=True)
        self.row = probabilities(logits[0, -1], self.temperature)
        return [Op("draft-lm", len(seq) - start, start, 1)]

    def rollback(self, length: int) -> None:
        if self.cache is not None and cache_length(self.cache) > length:
            self.cache = truncate_cache(self.cache, length) if length else None


def device_cloud_sd(ctx: Context, llm: DecoderLM, draft_lm: DecoderLM, gamma: int, trace: Trace):
    """Device-cloud speculative decoding with a separate draft LM sending raw tokens."""
    trace.start_s = ctx.engine.now
    name, stats = ctx.device.name, RoundStats()
    vocab = ctx.served.draft_lm.vocab_size if ctx.served.draft_lm else llm.cfg.vocab_size
    q_bytes = 0 if ctx.temperature == 0 else vocab * ctx.served.llm.bytes_per_value
    cloud: dict = {"cache": None}
    model_device = llm.embed.weight.device
    draft = _DraftLM(draft_lm, ctx.temperature)
    seq = list(ctx.prompt)

    def request(tokens: list[int], pos: int, q: torch.Tensor | None) -> Request:
        @torch.no_grad()
        def serve():
            cache = cloud["cache"]
            if cache is not None and cache_length(cache) > pos:
                cache = truncate_cache(cache, pos) if pos else None
            logits, cloud["cache"] = llm(torch.tensor([tokens], device=model_device), cache,
                                         use_cache=True)
            p = probabilities(logits[0], ctx.temperature)
            if q is None:  # prefill: the first token
                return (0, sample(p[-1], ctx.generator)), VERDICT_BYTES, None
            verdict = verify(tokens[1:], q, p, ctx.generator)
            return (verdict.accepted, verdict.token), VERDICT_BYTES, None
        return Request(name, "prefill" if q is None else "decode", len(tokens),
                       [ctx.served.charge(Op("full", len(tokens), pos, len(tokens)))], serve)

    yield Upload(request(seq, 0, None), TOKEN_BYTES * len(seq))
    yield Compute(ctx.seconds(draft.catch_up(seq)))  # the draft LM's prefill, meanwhile
    _, token = yield Wait()
    seq.append(token)
    trace.commit(ctx.engine.now, [token], ctx.new_tokens)
    while len(trace.tokens) < ctx.new_tokens:
        committed = len(seq)
        rows = []
        for _ in range(gamma):
            yield Compute(ctx.seconds(draft.catch_up(seq)))
            rows.append(draft.row)
            seq.append(sample(draft.row, ctx.generator))
        sent = seq[committed - 1:]
        q = torch.stack(rows) if rows else torch.zeros((0, llm.cfg.vocab_size), dtype=torch.float64)
        yield Upload(request(sent, committed - 1, q), TOKEN_BYTES * len(sent) + q_bytes * gamma)
        accepted, token = yield Wait()
        stats.rounds += 1
        stats.drafted += gamma
        stats.accepted += accepted
        stats.committed_in_rounds += accepted + 1
        del seq[committed + accepted:]
        draft.rollback(len(seq))
        seq.append(token)
        trace.commit(ctx.engine.now, seq[committed:], ctx.new_tokens)
    trace.stats = stats
