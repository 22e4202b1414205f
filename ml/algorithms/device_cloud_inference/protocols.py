"""How one request is served under HAT and under each baseline, as event-engine processes.

Every protocol is a generator for :class:`ml.algorithms.device_cloud_inference.engine.Engine`
run by the cloud (the coordinator). The device's part runs on its device role
(:mod:`.devices`, reached through ``ctx.role``: in-process when emulated, on the device's rank
when distributed); the protocol yields the emulated time of the passes the device reports,
talks to the cloud's queue through :class:`Request` s whose real work runs when the cloud's
batch starts, and writes when tokens were committed into a :class:`Trace`. The engine decides
the order of everything in both runtimes, so a distributed run computes what the emulated one
does, in the same order.

- :func:`hat` -- prefill in pipelined chunks of hidden states (size chosen per device from the
  cloud's current load), then rounds: draft ``gamma`` tokens on the device (input -> adapter ->
  output), upload their input hidden states, keep drafting while the verification is in flight,
  run the output submodel on the returned hidden states and verify by speculative sampling.
- :func:`hat` with ``gamma=0``, no drafting, one chunk: plain U-shaped split inference, one
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

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ml.algorithms.device_cloud_inference.chunking import choose_chunk_size, chunk_bounds
from ml.algorithms.device_cloud_inference.cost import Op, ServedModels, pass_seconds
from ml.algorithms.device_cloud_inference.devices import token_tensor
from ml.algorithms.device_cloud_inference.engine import (Compute, Engine, Poll, Request, Upload,
                                                         Wait)
from ml.algorithms.device_cloud_inference.sampling import probabilities, sample, verify
from ml.algorithms.device_cloud_inference.session import CloudMiddle, RoundStats
from ml.models.transformer import DecoderLM, cache_length, truncate_cache
from ml.testbed import EmulatedDevice

TOKEN_BYTES = 4
VERDICT_BYTES = 8


@dataclass
class Trace:
    """One request's timeline: when it started and when each generated token was committed,
    on the emulated clock and on the wall clock of the coordinator."""

    device: str
    start_s: float = 0.0
    token_times: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    chunk_size: int | None = None
    predicted_ttft_s: float | None = None
    stats: RoundStats | None = None
    wall_start_s: float = 0.0
    wall_token_times: list[float] = field(default_factory=list)

    def commit(self, now: float, tokens: list[int], limit: int) -> None:
        room = limit - len(self.tokens)
        self.tokens += tokens[:room]
        self.token_times += [now] * min(room, len(tokens))
        self.wall_token_times += [time.perf_counter()] * min(room, len(tokens))

    @property
    def ttft_s(self) -> float:
        return self.token_times[0] - self.start_s

    @property
    def tbt_s(self) -> float:
        """Mean time between output tokens after the first."""
        return _mean_gap(self.token_times)

    @property
    def wall_ttft_s(self) -> float:
        return self.wall_token_times[0] - self.wall_start_s

    @property
    def wall_tbt_s(self) -> float:
        return _mean_gap(self.wall_token_times)


def _mean_gap(times: list[float]) -> float:
    if len(times) < 2:
        return 0.0
    return (times[-1] - times[0]) / (len(times) - 1)


@dataclass
class Context:
    """What every protocol needs: the engine, the clock's model shapes, the request's settings,
    the cloud's generator for it, and ``role``, the device's role (a runtime worker: ``call``
    returns a future, ``cast`` sends without a reply)."""

    engine: Engine
    served: ServedModels
    device: EmulatedDevice
    prompt_len: int
    new_tokens: int
    temperature: float
    generator: torch.Generator
    role: Any

    def seconds(self, ops: list[Op]) -> float:
        """Emulated device time of real passes ``ops`` (one roofline pass each)."""
        return sum(pass_seconds(self.device, self.served.charge(op)) for op in ops)

    def hidden_bytes(self, tokens: int) -> int:
        return self.served.llm.hidden_bytes(tokens)

    def ask(self, method: str, *args: Any, kind: str | None = None,
            reply_kind: str | None = None) -> Any:
        """The device role's answer to ``method(*args)`` (payload kinds label the traffic)."""
        return self.role.call(method, *args, kind=kind, reply_kind=reply_kind).result()

    def start(self, trace: Trace) -> None:
        trace.start_s = self.engine.now


def _middle_request(ctx: Context, cloud: CloudMiddle, h: torch.Tensor, pos: int, kind: str,
                    logits_for: int) -> Request:
    name, tokens = ctx.device.name, h.shape[1]

    def serve():
        h_mid, _ = cloud.forward(name, h, pos)
        return (h_mid, pos, logits_for), ctx.hidden_bytes(tokens), None
    return Request(name, kind, tokens, [ctx.served.charge(Op("middle", tokens, pos))], serve)


def hat(ctx: Context, cloud: CloudMiddle, trace: Trace, gamma: int, chunk_size: int | None,
        parallel_drafting: bool, drafting: bool, draft_window: int | None = None):
    """HAT's request (``gamma=0``, ``drafting=False``, one chunk: plain U-split); the device
    role is a :class:`.devices.HATDevice`."""
    ctx.start(trace)
    prompt_len = ctx.prompt_len
    if chunk_size is None:
        window = min(prompt_len, draft_window or prompt_len) if drafting else 0
        chunk_size, trace.predicted_ttft_s = choose_chunk_size(
            prompt_len, ctx.device, ctx.engine.testbed, ctx.served, max(1, ctx.engine.load),
            window, cloud_share=ctx.engine.cloud_share)
    trace.chunk_size = chunk_size
    bounds = chunk_bounds(prompt_len, chunk_size)
    # Prefill: chunk k+1's input pass and upload overlap chunk k's cloud pass (links are queues).
    outstanding = len(bounds)

    def consume(reply) -> float:
        h_mid, pos, logits_for = reply
        return ctx.seconds(ctx.ask("prefill_reply", h_mid, pos, logits_for, kind="prefill"))
    for i, (start, end) in enumerate(bounds):
        ops, h = ctx.ask("prefill_chunk", start, end, reply_kind="prefill")
        yield Compute(ctx.seconds(ops))
        yield Upload(_middle_request(ctx, cloud, h, start, "prefill",
                                     1 if i == len(bounds) - 1 else 0),
                     ctx.hidden_bytes(end - start))
        while (reply := (yield Poll())) is not None:
            seconds = consume(reply)
            outstanding -= 1
            yield Compute(seconds)
    if drafting:  # the draft model's prefill (its window), while the cloud works
        yield Compute(ctx.seconds(ctx.ask("draft_prefill", prompt_len)))
    for _ in range(outstanding):
        yield Compute(consume((yield Wait())))
    token, upload = ctx.ask("first_token", gamma, ctx.new_tokens, reply_kind="decode")
    trace.commit(ctx.engine.now, [token], ctx.new_tokens)
    # Decoding rounds: the device answers each verification with its next round's upload.
    while upload is not None:
        for draft_ops in upload.draft_ops:
            yield Compute(ctx.seconds(draft_ops))
        yield Compute(ctx.seconds(upload.input_ops))
        h = upload.hidden
        yield Upload(_middle_request(ctx, cloud, h, upload.pos, "decode", h.shape[1]),
                     ctx.hidden_bytes(h.shape[1]))
        reply, lookahead = None, 0
        if parallel_drafting and drafting:
            while (reply := (yield Poll())) is None and lookahead < gamma:
                lookahead += 1
                yield Compute(ctx.seconds(ctx.ask("draft_step")))
        if reply is None:
            reply = yield Wait()
        h_mid, pos, logits_for = reply
        ops, new, upload = ctx.ask("verify_round", h_mid, pos, logits_for, upload.sent_until,
                                   gamma, ctx.new_tokens, kind="decode", reply_kind="decode")
        yield Compute(ctx.seconds(ops))
        trace.commit(ctx.engine.now, new, ctx.new_tokens)
    trace.stats = ctx.ask("finish")
    cloud.release(ctx.device.name)


def cloud_only(ctx: Context, llm: DecoderLM, trace: Trace):
    """Cloud-only inference: the prompt's token ids go up, generated tokens stream down; the
    device role is a :class:`.devices.CloudOnlyDevice`."""
    ctx.start(trace)
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

    prompt = ctx.ask("request", reply_kind="prefill").tolist()
    yield Upload(step(prompt, 0), TOKEN_BYTES * len(prompt))
    while len(trace.tokens) < ctx.new_tokens:
        token = yield Wait()
        ctx.role.cast("receive", token_tensor([token]),
                      kind="decode" if trace.tokens else "prefill")
        trace.commit(ctx.engine.now, [token], ctx.new_tokens)


def device_cloud_sd(ctx: Context, llm: DecoderLM, gamma: int, trace: Trace):
    """Device-cloud speculative decoding with a separate draft LM sending raw tokens; the
    device role is a :class:`.devices.DraftingDevice`."""
    ctx.start(trace)
    name, stats = ctx.device.name, RoundStats()
    vocab = llm.cfg.vocab_size
    q_bytes = 0 if ctx.temperature == 0 else (
        (ctx.served.draft_lm.vocab_size if ctx.served.draft_lm else vocab)
        * ctx.served.llm.bytes_per_value)
    cloud: dict = {"cache": None}
    model_device = llm.embed.weight.device

    def request(tokens: list[int], pos: int, q: torch.Tensor | None, first: bool) -> Request:
        @torch.no_grad()
        def serve():
            cache = cloud["cache"]
            if cache is not None and cache_length(cache) > pos:
                cache = truncate_cache(cache, pos) if pos else None
            logits, cloud["cache"] = llm(torch.tensor([tokens], device=model_device), cache,
                                         use_cache=True)
            p = probabilities(logits[0], ctx.temperature)
            if first:
                return (0, sample(p[-1], ctx.generator)), VERDICT_BYTES, None
            # greedy drafts are their own (one-hot) distributions: none were sent
            rows = q if q is not None else torch.nn.functional.one_hot(
                torch.tensor(tokens[1:]), vocab).double()
            verdict = verify(tokens[1:], rows, p, ctx.generator)
            return (verdict.accepted, verdict.token), VERDICT_BYTES, None
        return Request(name, "prefill" if first else "decode", len(tokens),
                       [ctx.served.charge(Op("full", len(tokens), pos, len(tokens)))], serve)

    prompt, ops = ctx.ask("request", reply_kind="prefill")
    yield Upload(request(prompt.tolist(), 0, None, True), TOKEN_BYTES * len(prompt))
    yield Compute(ctx.seconds(ops))  # the draft LM's prefill, meanwhile
    verdict = yield Wait()
    upload = ctx.ask("accept", token_tensor(list(verdict)), gamma, ctx.new_tokens,
                     kind="prefill", reply_kind="decode")
    trace.commit(ctx.engine.now, [verdict[1]], ctx.new_tokens)
    committed = ctx.prompt_len + 1
    # Rounds: the device answers each verdict with its next round's drafts.
    while upload is not None:
        for step_ops in upload.draft_ops:
            yield Compute(ctx.seconds(step_ops))
        sent = upload.tokens.tolist()
        yield Upload(request(sent, committed - 1, upload.q, False),
                     TOKEN_BYTES * len(sent) + q_bytes * gamma)
        accepted, token = verdict = yield Wait()
        upload = ctx.ask("accept", token_tensor(list(verdict)), gamma, ctx.new_tokens,
                         kind="decode", reply_kind="decode")
        stats.rounds += 1
        stats.drafted += gamma
        stats.accepted += accepted
        stats.committed_in_rounds += accepted + 1
        new = sent[1:1 + accepted] + [token]
        committed += len(new)
        trace.commit(ctx.engine.now, new, ctx.new_tokens)
    trace.stats = stats
