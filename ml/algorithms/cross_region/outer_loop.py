"""The one outer loop that DiLoCo, Streaming DiLoCo and CoCoDC share.

Each inner step every region trains its replica (AdamW), then the loop, with a pluggable
:class:`SyncPolicy`:

1. **Receives** every fragment whose reduce is due this step: waits (on the emulated clock) for the
   reduce to finish, takes the outer Nesterov step θ̃_p ← OuterSGD_p(θ̃_p, mean_m Δ_{m,p}) and
   merges it into each replica, by
   * ``alpha``: θ_{m,p} ← α·θ_{m,p} + (1 − α)·θ̃_p (Streaming DiLoCo; DiLoCo is α = 0), or
   * ``compensate``: CoCoDC's delay compensation (see :mod:`.compensation`).
2. **Sends** the fragments the schedule picks (see :mod:`.transmission`): snapshots s_{m,p},
   pseudo-gradients Δ_{m,p} = θ̃_p − s_{m,p} (optionally quantised, see :mod:`.quantization`),
   and starts their all-reduce on the emulated WAN, due τ_p steps later.
3. Receives again, for reduces due at once (τ = 0: DiLoCo's blocking sync).

The loop runs the regions one process hosts (all of them when emulated, one per rank when
distributed) and reaches the others through :mod:`ml.distributed.collectives`: the
pseudo-gradient mean is an asynchronous all-reduce started at the send and waited for at the
receive, and Adaptive Transmission's score is an all-reduce of one number per region. Both add
in region order, so every process takes the same decisions and the same outer steps, and a
distributed run reproduces the emulated one bit for bit. Every process keeps the emulated WAN
clock of all regions (it only depends on the schedule, which every process shares).

The methods are settings of this loop:

============================  =========  =======================  ==========  ============
method                        fragments  schedule                 τ           merge
============================  =========  =======================  ==========  ============
``diloco``                    1          every H steps            0 (blocks)  α = 0
``streaming-diloco``          P          staggered, p·⌊H/P⌋       from WAN    α
``cocodc``                    P          adaptive, every ⌊H/N⌋    from WAN    compensate
============================  =========  =======================  ==========  ============
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ml.algorithms.cross_region.compensation import compensated_fragment
from ml.algorithms.cross_region.fragments import Fragment
from ml.algorithms.cross_region.outer_optimizer import GlobalFragment
from ml.algorithms.cross_region.quantization import QuantizedCodec, payload_bytes
from ml.algorithms.cross_region.replica import Replica
from ml.algorithms.cross_region.transmission import (AdaptiveSchedule, FragmentStatus,
                                                     StaggeredSchedule, region_change)
from ml.algorithms.cross_region.wan import WanEmulator
from ml.distributed.collectives import Collectives, LocalCollectives, Pending

MergeRule = Literal["alpha", "compensate"]


@dataclass(frozen=True)
class SyncPolicy:
    """How and when fragments are synchronised; the only thing the three methods differ in."""

    fragments: Sequence[Fragment]
    schedule: StaggeredSchedule | AdaptiveSchedule
    merge: MergeRule = "alpha"
    alpha: float = 0.0
    dc_lambda: float = 0.0
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    bits: int = 32
    overlap_steps: int | None = None  # τ for every fragment; None: each fragment's from the WAN


@dataclass
class _Reduce:
    """A fragment's all-reduce in flight."""

    send_step: int
    recv_step: int
    done_s: float
    snapshots: list[list[Tensor]]
    delta: Pending  # of mean_m Δ_{m,p}, the all-reduce in flight


@dataclass
class SyncStats:
    """What the loop did, for metrics."""

    sends: list[int] = field(default_factory=list)  # per fragment
    send_intervals: list[list[int]] = field(default_factory=list)  # I_p at each send
    blocked_s: float = 0.0


class OuterLoop:
    """Regions training replicas, synchronised fragment by fragment under a :class:`SyncPolicy`."""

    def __init__(self, replicas: Sequence[Replica], policy: SyncPolicy, wan: WanEmulator,
                 collectives: Collectives | None = None):
        """``replicas`` are this process's regions, in the order of ``collectives.local``
        (default: every region, in this process)."""
        if not replicas:
            raise ValueError("need at least one replica")
        self.replicas = list(replicas)
        self.collectives = collectives or LocalCollectives(range(len(self.replicas)))
        self.members = self.collectives.local
        if len(self.members) != len(self.replicas):
            raise ValueError(f"{len(self.replicas)} replicas for local regions {self.members}")
        self.codec = QuantizedCodec(policy.bits) if policy.bits != 32 else None
        self.policy = policy
        self.wan = wan
        first = self.replicas[0]
        self.globals = [GlobalFragment(first.tensors(f.names), policy.outer_lr,
                                       policy.outer_momentum) for f in policy.fragments]
        self.status = [FragmentStatus(f.numel) for f in policy.fragments]
        self.payload = [payload_bytes(f.tensor_numels, policy.bits) for f in policy.fragments]
        self.tau = [policy.overlap_steps if policy.overlap_steps is not None
                    else wan.overlap_steps(b) for b in self.payload]
        self.stats = SyncStats(sends=[0] * len(self.globals),
                               send_intervals=[[] for _ in self.globals])
        self.step_count = 0
        self.last_losses: list[float] = []  # each local replica's loss at the last step
        self._in_flight: dict[int, _Reduce] = {}

    def step(self) -> float:
        """One inner step on every replica, then the receives and sends it triggers.

        Returns the mean training loss over the replicas.
        """
        losses = [replica.train_step() for replica in self.replicas]
        self.last_losses = losses
        self.wan.compute_step()
        self.step_count += 1
        t = self.step_count
        self._receive_due(t)
        for p in self.policy.schedule.select(t, self.status, lambda p: self._score(p, t)):
            if p in self._in_flight:  # the timetable outran a slow link: finish that one first
                self._receive(p, t)
            self._send(p, t)
        self._receive_due(t)
        return sum(losses) / len(losses)

    def staleness(self) -> list[int]:
        """I_p now: steps since each fragment was last sent (since the start if never)."""
        return [s.staleness(self.step_count) for s in self.status]

    def in_flight(self) -> list[int]:
        return sorted(self._in_flight)

    def _fragment(self, replica: Replica, p: int) -> list[Tensor]:
        return replica.tensors(self.policy.fragments[p].names)

    def _score(self, p: int, t: int) -> float:
        """R_p summed over every region (CoCoDC's score, see :mod:`.transmission`)."""
        changes = {m: [torch.tensor(region_change(self.globals[p].params, self._fragment(r, p)),
                                    dtype=torch.float64)]
                   for m, r in zip(self.members, self.replicas)}
        total = self.collectives.all_reduce(f"score/{p}/{t}", changes, kind="score").wait()
        status = self.status[p]
        return float(total[0]) / (max(1, status.staleness(t)) * status.numel)

    @torch.no_grad()
    def _send(self, p: int, t: int) -> None:
        snapshots = [[x.clone() for x in self._fragment(r, p)] for r in self.replicas]
        pseudo = {m: self.globals[p].pseudo_gradient(snap)
                  for m, snap in zip(self.members, snapshots)}
        delta = self.collectives.all_reduce(f"delta/{p}/{t}", pseudo, mean=True,
                                            kind="pseudo-gradient", codec=self.codec)
        done = self.wan.start_allreduce(self.payload[p])
        self._in_flight[p] = _Reduce(t, t + self.tau[p], done, snapshots, delta)
        status = self.status[p]
        self.stats.send_intervals[p].append(status.staleness(t))
        self.stats.sends[p] += 1
        status.sent, status.last_send_step, status.in_flight = True, t, True

    def _receive_due(self, t: int) -> None:
        for p in sorted(p for p, r in self._in_flight.items() if r.recv_step <= t):
            self._receive(p, t)

    @torch.no_grad()
    def _receive(self, p: int, t: int) -> None:
        reduce = self._in_flight.pop(p)
        self.stats.blocked_s += self.wan.wait_until(reduce.done_s)
        fragment_global = self.globals[p]
        fragment_global.step(reduce.delta.wait())
        for replica, snapshot in zip(self.replicas, reduce.snapshots):
            local = self._fragment(replica, p)
            if self.policy.merge == "compensate":
                merged = compensated_fragment(fragment_global.params, snapshot, local,
                                              self.policy.dc_lambda)
                for dst, src in zip(local, merged):
                    dst.copy_(src)
            else:
                alpha = self.policy.alpha
                for dst, g in zip(local, fragment_global.params):
                    dst.mul_(alpha).add_(g, alpha=1.0 - alpha)
        self.status[p].in_flight = False
