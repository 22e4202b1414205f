"""WAN emulation glue: per-region clocks from the testbed and a shared ring for the all-reduces.

Time model (the USTC group's FLOP-based one; ml.testbed.emulator for clocks and links):

- One inner step costs each region ``6 · params · tokens`` FLOPs (forward 2·P·T, backward twice
  that) at its profile's rate; regions run in parallel, each on its own clock.
- An all-reduce of ``B`` bytes is a ring over the workers (ours [I], as NCCL does it): 2(M − 1)
  hops, each sending a chunk of B/M bytes over the link to the next region, so it takes
  2(M − 1)·(latency + (B/M)·8 / bandwidth) and puts 2(M − 1)·B bytes on the wire in all.
  Reduces queue on the ring one after another (a fragment waits while another is in flight).
- A reduce starts when the last region has contributed (the latest clock) and every region that
  uses its result first waits for it to finish: DiLoCo, which uses it at once, blocks on the whole
  reduce; Streaming DiLoCo and CoCoDC use it τ steps later and only wait if it is still running.
- τ = ⌈reduce time / step time⌉ (Streaming DiLoCo, arXiv 2501.18512).

The stand-in scale (ours [I]): a small model trained on a CPU would have its step time dwarfed by
WAN latency, which no real deployment faces. The clock therefore charges compute and bytes for a
model of ``emulated_params`` parameters trained on ``emulated_tokens_per_step`` tokens per step
(defaults: the authors' Llama-150M, 256 × 1024 tokens); each fragment's bytes scale with its
share of the real model. ``traffic_bytes`` counts those emulated bytes, so traffic and
``sim_time_s`` describe the same emulated run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ml.testbed import EmulatedDevice, Testbed, TrafficKey

#: Training FLOPs per parameter per token: forward 2, backward 4 (ours, the usual estimate).
FLOPS_PER_PARAM_TOKEN = 6
TRAFFIC_KIND = "pseudo-gradient"


@dataclass(frozen=True)
class EmulatedWorkload:
    """What one inner step and one byte of the real model stand for on the emulated clock."""

    real_params: int
    params: int
    tokens_per_step: int

    @property
    def step_flops(self) -> float:
        return float(FLOPS_PER_PARAM_TOKEN * self.params * self.tokens_per_step)

    def wire_bytes(self, real_bytes: int) -> int:
        """Bytes the emulated model would send where the real one sends ``real_bytes``."""
        return int(math.ceil(real_bytes * self.params / self.real_params))


class WanEmulator:
    """The regions' clocks, the ring they all-reduce over, and the traffic it carried."""

    def __init__(self, testbed: Testbed, workload: EmulatedWorkload):
        self.testbed = testbed
        self.regions: list[EmulatedDevice] = list(testbed.workers)
        self.workload = workload
        self._ring_free_s = 0.0

    @property
    def step_seconds(self) -> float:
        """Emulated compute time of one inner step on the slowest region."""
        return max(self.testbed.compute_time(r, self.workload.step_flops) for r in self.regions)

    def compute_step(self) -> None:
        """Every region runs one inner step on its own clock."""
        for region in self.regions:
            self.testbed.compute(region, self.workload.step_flops)

    def allreduce_seconds(self, real_bytes: int) -> float:
        """How long a ring all-reduce of the emulated payload takes (0 with one region)."""
        m = len(self.regions)
        if m < 2:
            return 0.0
        chunk = self.workload.wire_bytes(real_bytes) / m
        hop = max(self.testbed.transfer_time(src, dst, int(math.ceil(chunk)))
                  for src, dst in self._ring())
        return 2 * (m - 1) * hop

    def overlap_steps(self, real_bytes: int) -> int:
        """τ: inner steps that pass while a reduce of ``real_bytes`` is in flight."""
        seconds = self.allreduce_seconds(real_bytes)
        return 0 if seconds == 0 else math.ceil(seconds / self.step_seconds - 1e-9)

    def start_allreduce(self, real_bytes: int) -> float:
        """Start a reduce now (once every region has contributed); return when it finishes."""
        start = max(self._ring_free_s, max(r.clock_s for r in self.regions))
        done = start + self.allreduce_seconds(real_bytes)
        self._ring_free_s = done
        m = len(self.regions)
        if m > 1:
            per_hop = int(math.ceil(self.workload.wire_bytes(real_bytes) / m))
            for src, dst in self._ring():
                for _ in range(2 * (m - 1)):
                    self.testbed.traffic.add(TrafficKey(src.name, dst.name, "peer", TRAFFIC_KIND),
                                             per_hop)
        return done

    def wait_until(self, t: float) -> float:
        """Every region idles until ``t`` (a reduce it needs has finished); return the wait."""
        waited = max(0.0, t - min(r.clock_s for r in self.regions))
        for region in self.regions:
            self.testbed.wait_until(region, t)
        return waited

    def now(self) -> float:
        return max(r.clock_s for r in self.regions)

    @property
    def traffic_bytes(self) -> int:
        return self.testbed.traffic.total()

    def _ring(self) -> list[tuple[EmulatedDevice, EmulatedDevice]]:
        m = len(self.regions)
        return [(self.regions[i], self.regions[(i + 1) % m]) for i in range(m)]
