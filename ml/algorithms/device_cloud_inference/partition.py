"""HAT step 1: cut a decoder LM into input, middle and output submodels (a U shape).

- input submodel: token embedding and blocks ``[0, l_in)``, on the device;
- middle submodel: blocks ``[l_in, L - l_out)``, in the cloud;
- output submodel: blocks ``[L - l_out, L)``, final norm and LM head, on the device.

The three share the weights of one frozen :class:`DecoderLM` and run through its piecewise
helpers (``embed_tokens``, ``forward_blocks``, ``logits_from_hidden``), so input → middle →
output computes exactly the full model. Each keeps its own KV cache (a list of ``(k, v)`` per
block of its range) that its caller owns and rolls back with ``truncate_cache``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ml.models.transformer import Cache, DecoderLM


@dataclass(frozen=True)
class USplit:
    """A frozen :class:`DecoderLM` cut after ``input_layers`` and before the last
    ``output_layers`` blocks."""

    model: DecoderLM
    input_layers: int
    output_layers: int

    def __post_init__(self):
        n = len(self.model.blocks)
        if self.input_layers < 0 or self.output_layers < 0:
            raise ValueError("input_layers and output_layers must be >= 0")
        if self.input_layers + self.output_layers >= n:
            raise ValueError(f"a model of {n} blocks cut after {self.input_layers} and before the "
                             f"last {self.output_layers} leaves no middle submodel")

    @property
    def n_layers(self) -> int:
        return len(self.model.blocks)

    @property
    def middle_range(self) -> tuple[int, int]:
        return self.input_layers, self.n_layers - self.output_layers

    @property
    def d_model(self) -> int:
        return self.model.cfg.d_model

    @torch.no_grad()
    def input_forward(self, tokens: torch.Tensor, past: Cache | None, pos: int
                      ) -> tuple[torch.Tensor, Cache]:
        """Device: hidden states ``[1, T, d]`` of ``tokens`` ``[1, T]`` at positions
        ``pos..`` after the input blocks, and their updated cache."""
        h = self.model.embed_tokens(tokens, pos)
        return self.model.forward_blocks(h, 0, self.input_layers, past, True, pos)

    @torch.no_grad()
    def middle_forward(self, h: torch.Tensor, past: Cache | None, pos: int
                       ) -> tuple[torch.Tensor, Cache]:
        """Cloud: the middle blocks over input-submodel hidden states ``h`` ``[1, T, d]``."""
        start, end = self.middle_range
        return self.model.forward_blocks(h, start, end, past, True, pos)

    @torch.no_grad()
    def output_forward(self, h: torch.Tensor, past: Cache | None, pos: int, logits_for: int
                       ) -> tuple[torch.Tensor | None, Cache]:
        """Device: the output blocks over ``h``; logits ``[1, logits_for, V]`` of the last
        ``logits_for`` positions (``None`` when 0: only the cache is wanted)."""
        start, end = self.middle_range[1], self.n_layers
        h, present = self.model.forward_blocks(h, start, end, past, True, pos)
        if logits_for == 0:
            return None, present
        return self.model.logits_from_hidden(h[:, -logits_for:]), present
