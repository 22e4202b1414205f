"""The device role: what an end device runs for its one request, under each serving method.

A device object holds its request's prompt, its models and caches, and its random generator;
the cloud reaches it only through the calls below (ml.distributed.runtime: in-process in an
emulated run, on the device's rank in a distributed one). Every call returns what crosses the
wire and the :class:`Op` s it ran, so the coordinator's event engine charges the emulated clock
for them: tensors are the payload (hidden states, token ids, verdicts), ops and token lists
travel in the JSON header (framing).

- :class:`HATDevice` -- HAT's input and output submodels and its adapter draft (no adapter:
  the plain U-shaped split). The prompt's tokens never leave it.
- :class:`CloudOnlyDevice` -- sends its prompt's token ids and receives the generated ones.
- :class:`DraftingDevice` -- device-cloud SD: a separate draft LM whose tokens go up.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ml.algorithms.device_cloud_inference.adapter import Adapter
from ml.algorithms.device_cloud_inference.cost import Op
from ml.algorithms.device_cloud_inference.partition import USplit
from ml.algorithms.device_cloud_inference.sampling import probabilities, sample
from ml.algorithms.device_cloud_inference.session import HATSession, RoundStats
from ml.distributed.messages import wire_type
from ml.models.transformer import Cache, DecoderLM, cache_length, truncate_cache

wire_type(Op)
wire_type(RoundStats)

#: Token ids cross the wire as int32: 4 bytes each, what the clock charges (TOKEN_BYTES).
TOKEN_DTYPE = torch.int32


def token_tensor(tokens: list[int]) -> torch.Tensor:
    return torch.tensor(tokens, dtype=TOKEN_DTYPE)


@wire_type
@dataclass
class RoundUpload:
    """A HAT (or U-split) decoding round as the device sends it: the ops of each draft step
    and of the input pass, the input hidden states to verify and their first position, and
    the sequence length they cover."""

    draft_ops: list
    input_ops: list
    hidden: torch.Tensor
    pos: int
    sent_until: int


@wire_type
@dataclass
class DraftUpload:
    """A device-cloud SD round as the device sends it: the ops of each draft step, the ids
    (the last committed token and the drafts) and, when sampling, the draft rows [gamma, V]."""

    draft_ops: list
    tokens: torch.Tensor
    q: torch.Tensor | None


class HATDevice:
    """A device under HAT or the plain U-split: one :class:`HATSession` (see its docstring)."""

    exposed = frozenset({"ready", "prefill_chunk", "prefill_reply", "first_token",
                         "draft_prefill", "draft_step", "verify_round", "finish"})

    def __init__(self, split: USplit, adapter: Adapter | None, prompt: list[int],
                 temperature: float, generator: torch.Generator, draft_window: int | None):
        self.session = HATSession(split, adapter, list(prompt), temperature, generator,
                                  draft_window)
        self._p_last: torch.Tensor | None = None

    def ready(self) -> bool:
        return True

    def prefill_chunk(self, start: int, end: int) -> tuple[list[Op], torch.Tensor]:
        """Input submodel up to ``end``; the hidden states of ``start..end - 1`` to upload."""
        ops = self.session.input_pass(end)
        return ops, self.session.hidden_states(start, end)

    def prefill_reply(self, h_mid: torch.Tensor, pos: int, logits_for: int) -> list[Op]:
        """Output submodel over a prefill chunk's middle hidden states."""
        self._p_last, ops = self.session.target_pass(h_mid, pos, logits_for)
        return ops

    def first_token(self, gamma: int, new_tokens: int) -> tuple[int, RoundUpload | None]:
        """The first generated token, from the last prefill chunk's distribution, and the
        first decoding round unless one token was asked for (one message: the round follows
        at once)."""
        token = self.session.commit_first(self._p_last[-1])
        return token, self._round(gamma) if new_tokens > 1 else None

    def draft_prefill(self, upto: int) -> list[Op]:
        """The draft model's prefill over its window of the prompt."""
        return self.session.draft_pass(upto)

    def _round(self, gamma: int) -> RoundUpload:
        """Draft up to ``gamma`` tokens and run the input submodel over them."""
        drafts = []
        while self.session.drafts < gamma:
            drafts.append(self.session.draft_step())
        ops = self.session.input_pass()
        h, pos = self.session.round_request()
        return RoundUpload(drafts, ops, h, pos, len(self.session.seq))

    def draft_step(self) -> list[Op]:
        """One look-ahead draft while a verification is in flight (parallel drafting)."""
        return self.session.draft_step()

    def verify_round(self, h_mid: torch.Tensor, pos: int, logits_for: int, sent_until: int,
                     gamma: int, new_tokens: int
                     ) -> tuple[list[Op], list[int], RoundUpload | None]:
        """Output submodel over the round's middle hidden states, then verification: the ops,
        the newly committed tokens, and the next round unless ``new_tokens`` are made (one
        message back, as the paper's device answers a verification with its next drafts)."""
        p, ops = self.session.target_pass(h_mid, pos, logits_for)
        new = self.session.finish_round(p, sent_until)
        more = len(self.session.generated()) < new_tokens
        return ops, new, self._round(gamma) if more else None

    def finish(self) -> RoundStats:
        return self.session.stats


class CloudOnlyDevice:
    """A device of cloud-only inference: its prompt goes up as token ids, tokens come down."""

    exposed = frozenset({"ready", "request", "receive", "output"})

    def __init__(self, prompt: list[int]):
        self.prompt = list(prompt)
        self.received: list[int] = []

    def ready(self) -> bool:
        return True

    def request(self) -> torch.Tensor:
        return token_tensor(self.prompt)

    def receive(self, tokens: torch.Tensor) -> None:
        self.received += tokens.tolist()

    def output(self) -> list[int]:
        return self.received


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


class DraftingDevice:
    """A device of device-cloud speculative decoding: a separate draft LM drafts ``gamma``
    tokens a round; their ids (and, when sampling, their draft distributions) go up, the
    cloud's verdict (accepted count, next token) comes down."""

    exposed = frozenset({"ready", "request", "accept", "output"})

    def __init__(self, draft_lm: DecoderLM, prompt: list[int], temperature: float,
                 generator: torch.Generator):
        self.draft = _DraftLM(draft_lm, temperature)
        self.temperature = temperature
        self.generator = generator
        self.prompt_len = len(prompt)
        self.seq = list(prompt)
        self.committed = len(self.seq)

    def ready(self) -> bool:
        return True

    def request(self) -> tuple[torch.Tensor, list[Op]]:
        """The prompt's ids to upload, and the draft LM's prefill over it (meanwhile)."""
        return token_tensor(self.seq), self.draft.catch_up(self.seq)

    def accept(self, verdict: torch.Tensor, gamma: int, new_tokens: int) -> DraftUpload | None:
        """Keep the accepted drafts and the cloud's token ``verdict = (accepted, token)``; then
        the next round's drafts unless ``new_tokens`` are made (one message back)."""
        accepted, token = verdict.tolist()
        del self.seq[self.committed + accepted:]
        self.draft.rollback(len(self.seq))
        self.seq.append(token)
        self.committed = len(self.seq)
        if self.committed - self.prompt_len >= new_tokens:
            return None
        return self._round(gamma)

    def _round(self, gamma: int) -> DraftUpload:
        """Draft ``gamma`` tokens (greedy: no rows sent, the cloud knows them from the ids)."""
        ops, rows = [], []
        for _ in range(gamma):
            ops.append(self.draft.catch_up(self.seq))
            rows.append(self.draft.row)
            self.seq.append(sample(self.draft.row, self.generator))
        q = torch.stack(rows) if self.temperature > 0 else None
        return DraftUpload(ops, token_tensor(self.seq[self.committed - 1:]), q)

    def output(self) -> list[int]:
        return self.seq[self.prompt_len:]
