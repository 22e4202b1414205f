"""Peak working memory of a piece of code: the torch tensor bytes it allocates beyond a baseline.

What is measured (ours): every tensor allocation and free that torch's allocator makes inside
the ``with`` block. On CPU they come from the profiler's memory events
(``torch.profiler.profile(profile_memory=True)``), replayed in time order; on CUDA from the
allocator's own counters (``max_memory_allocated`` after ``reset_peak_memory_stats``). The
result is the highest number of bytes held at once *beyond what was held at entry*: activations,
gradients, optimizer states, Gram matrices, copies. Weights that already existed before entry
are not counted (see ``resident_weight_bytes`` in ml.algorithms.llm_compression.runner for how they are
added). Python objects outside torch are not counted. The profiler slows the code down by a few
microseconds per op; times measured inside a ``PeakMemory`` block include that overhead.
"""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.bytes``."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.bytes = 0
        self._profiler = None
        self._start = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._profiler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = max(0, torch.cuda.max_memory_allocated(self.device) - self._start)
            return
        self._profiler.__exit__(*exc)
        if exc[0] is None:
            self.bytes = peak_from_events(self._profiler)
        self._profiler = None


def peak_from_events(prof) -> int:
    """Highest running sum of the CPU allocation events of a finished profiler (0 if none)."""
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    events.sort(key=lambda e: e.start_ns())
    held = peak = 0
    for event in events:
        held += event.nbytes()
        peak = max(peak, held)
    return peak
