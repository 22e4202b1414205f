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


class HATDevice:
    """A device under HAT or the plain U-split: one :class:`HATSession` (see its docstring)."""

    exposed = frozenset({"ready", "prefill_chunk", "prefill_reply", "first_token",
                         "draft_prefill", "round_upload", "draft_step", "verify_round",
                         "finish"})

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

    def first_token(self) -> int:
        """The first generated token, from the last prefill chunk's distribution."""
        return self.session.commit_first(self._p_last[-1])

    def draft_prefill(self, upto: int) -> list[Op]:
        """The draft model's prefill over its window of the prompt."""
        return self.session.draft_pass(upto)

    def round_upload(self, gamma: int
                     ) -> tuple[list[list[Op]], list[Op], torch.Tensor, int, int]:
        """Draft up to ``gamma`` tokens, run the input submodel over them; returns the ops of
        each draft step and of the input pass, the hidden states to upload, their first
        position and the sequence length sent."""
        drafts = []
        while self.session.drafts < gamma:
            drafts.append(self.session.draft_step())
        ops = self.session.input_pass()
        h, pos = self.session.round_request()
        return drafts, ops, h, pos, len(self.session.seq)

    def draft_step(self) -> list[Op]:
        """One look-ahead draft while a verification is in flight (parallel drafting)."""
        return self.session.draft_step()

    def verify_round(self, h_mid: torch.Tensor, pos: int, logits_for: int, sent_until: int
                     ) -> tuple[list[Op], list[int]]:
        """Output submodel over the round's middle hidden states, then verification; the ops
        and the newly committed tokens."""
        p, ops = self.session.target_pass(h_mid, pos, logits_for)
        return ops, self.session.finish_round(p, sent_until)

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

    exposed = frozenset({"ready", "request", "draft_round", "accept", "output"})

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

    def draft_round(self, gamma: int) -> tuple[list[list[Op]], torch.Tensor,
                                               torch.Tensor | None]:
        """Draft ``gamma`` tokens; the ops of each step, the ids to upload (the last
        committed token and the drafts) and, when sampling, the draft distributions [gamma, V]
        (greedy: none, the cloud knows them from the ids)."""
        ops, rows = [], []
        for _ in range(gamma):
            ops.append(self.draft.catch_up(self.seq))
            rows.append(self.draft.row)
            self.seq.append(sample(self.draft.row, self.generator))
        q = torch.stack(rows) if self.temperature > 0 else None
        return ops, token_tensor(self.seq[self.committed - 1:]), q

    def accept(self, verdict: torch.Tensor) -> None:
        """Keep the accepted drafts and the cloud's token ``verdict = (accepted, token)``."""
        accepted, token = verdict.tolist()
        del self.seq[self.committed + accepted:]
        self.draft.rollback(len(self.seq))
        self.seq.append(token)
        self.committed = len(self.seq)

    def output(self) -> list[int]:
        return self.seq[self.prompt_len:]
