"""An event-driven emulation of many devices sharing one cloud server, on the testbed clock.

Ours [I]: the paper says only that the cloud serves 30 devices. The engine makes the cloud's
load visible in TTFT and TBT:

- **Devices** run a *process* each: a generator that yields :class:`Compute` (the device is busy
  for that many emulated seconds), :class:`Upload` (a request is queued on the device's uplink;
  the device does not wait for it) and :class:`Wait` (the device idles until a reply is in its
  inbox; the reply is the value of the ``yield``). A process can also look at its ``inbox``
  between steps without blocking (:class:`Poll`): that is how drafting continues while a
  verification is in flight.
- **Links**: each direction of each device–cloud pair is a FIFO resource. A message starts when
  the link is free, takes ``bytes · 8 / bandwidth`` to serialise and arrives one latency (half
  the RTT) later; the emulator's link model (:class:`ml.testbed.Testbed`), with upload and
  compute overlapping, which chunked prefill needs. Bytes are booked in the testbed's ledger.
- **Cloud**: one server with a FIFO queue. Whenever it is idle and requests wait, it takes them
  all (up to ``batch_tokens`` tokens, at least one request) as one batch, runs their real
  computation, and is busy for :func:`.cost.batch_seconds` of their passes (the
  roofline: weights are read once per batch, so batching many devices pays off), divided by
  ``cloud_share``, the fraction of the server this service gets (the rest busy with other
  tenants: a congested cloud, ours). At the end of
  the batch each reply is sent down; a request may leave a follow-up request for the cloud
  itself (cloud-only decoding generates without the device).

Deterministic: events at the same time run in the order they were scheduled.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from ml.algorithms.device_cloud_inference.cost import Pass, batch_seconds
from ml.reporting import Cancelled
from ml.testbed import EmulatedDevice, Testbed, TrafficKey


@dataclass
class Request:
    """Work for the cloud. ``serve()`` runs the real computation when the batch starts and
    returns ``(reply, reply_bytes, follow_up)``; ``passes`` are what the clock charges."""

    device: str
    kind: str
    tokens: int
    passes: list[Pass]
    serve: Callable[[], tuple[Any, int, "Request | None"]]


@dataclass(frozen=True)
class Compute:
    seconds: float


@dataclass(frozen=True)
class Upload:
    request: Request
    nbytes: int


@dataclass(frozen=True)
class Wait:
    pass


@dataclass(frozen=True)
class Poll:
    """The next reply if one has arrived, else ``None``; never blocks."""


ProcessFn = Generator[Compute | Upload | Wait | Poll, Any, Any]


@dataclass(eq=False)
class Process:
    device: EmulatedDevice
    gen: ProcessFn
    inbox: list = field(default_factory=list)
    waiting: bool = False
    wait_since: float = 0.0
    done: bool = False
    result: Any = None


@dataclass(frozen=True)
class Batch:
    start_s: float
    end_s: float
    requests: int
    tokens: int


class Engine:
    """Runs device processes and the cloud's batches on one event queue (see the module doc)."""

    def __init__(self, testbed: Testbed, batch_tokens: int = 4096,
                 should_stop: Callable[[], bool] = lambda: False, cloud_share: float = 1.0):
        if not 0 < cloud_share <= 1:
            raise ValueError(f"cloud_share must be in (0, 1], got {cloud_share}")
        self.testbed = testbed
        self.cloud_share = cloud_share
        self.cloud = testbed.require_server()
        self.batch_tokens = batch_tokens
        self.should_stop = should_stop
        self.now = 0.0
        self._events: list = []
        self._order = itertools.count()
        self._link_free: dict[tuple[str, str], float] = {}
        self._processes: dict[str, Process] = {}
        self.queue: list[Request] = []
        self.cloud_busy = False
        self.batches: list[Batch] = []
        self._starts: list[tuple[float, Process]] = []

    # -- scheduling ---------------------------------------------------------------------------
    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, next(self._order), fn))

    def start(self, device: EmulatedDevice, gen: ProcessFn, t: float = 0.0) -> Process:
        proc = Process(device, gen)
        self._processes[device.name] = proc
        self._starts.append((t, proc))
        self.at(t, lambda: self._advance(proc))
        return proc

    @property
    def load(self) -> int:
        """Devices whose request has started (now or earlier) and not finished: the load the
        cloud's state monitoring sees."""
        return sum(1 for t, proc in self._starts if t <= self.now and not proc.done)

    def run(self, poll_every: int = 200) -> float:
        """Run every event; return the time of the last one. Polls ``should_stop`` and raises
        :class:`ml.reporting.Cancelled`."""
        count = 0
        while self._events:
            t, _, fn = heapq.heappop(self._events)
            self.now = t
            fn()
            count += 1
            if count % poll_every == 0 and self.should_stop():
                raise Cancelled()
        return self.now

    # -- devices ------------------------------------------------------------------------------
    def _advance(self, proc: Process, value: Any = None) -> None:
        proc.device.clock_s = max(proc.device.clock_s, self.now)
        while True:
            try:
                cmd = proc.gen.send(value)
            except StopIteration as stop:
                proc.done, proc.result = True, stop.value
                return
            value = None
            if isinstance(cmd, Compute):
                proc.device.compute_s += cmd.seconds
                proc.device.clock_s = self.now + cmd.seconds
                self.at(self.now + cmd.seconds, lambda: self._advance(proc))
                return
            if isinstance(cmd, Upload):
                arrival = self.transmit(proc.device, self.cloud, cmd.nbytes, cmd.request.kind)
                self.at(arrival, lambda r=cmd.request: self._arrive(r))
                continue
            if isinstance(cmd, Poll):
                value = proc.inbox.pop(0) if proc.inbox else None
                continue
            if isinstance(cmd, Wait):
                if proc.inbox:
                    value = proc.inbox.pop(0)
                    continue
                proc.waiting, proc.wait_since = True, self.now
                return
            raise TypeError(f"a process yielded {cmd!r}")

    def _deliver(self, proc: Process, reply: Any) -> None:
        proc.inbox.append(reply)
        if proc.waiting:
            proc.waiting = False
            proc.device.receiving_s += self.now - proc.wait_since
            self._advance(proc, proc.inbox.pop(0))

    # -- links --------------------------------------------------------------------------------
    def transmit(self, src: EmulatedDevice, dst: EmulatedDevice, nbytes: int, kind: str) -> float:
        """Queue ``nbytes`` on the ``src -> dst`` link now; return their arrival time (they
        share ``dst``'s downlink with everything else sent to it, as in the emulator)."""
        start = max(self.now, self._link_free.get((src.name, dst.name), 0.0))
        end = start + nbytes * 8 / self.testbed.bandwidth_bps(src, dst)
        self._link_free[(src.name, dst.name)] = end
        key = TrafficKey(src.name, dst.name, self.testbed.direction(src, dst), kind)
        self.testbed.traffic.add(key, int(nbytes))
        latency = self.testbed.latency_s(src, dst)
        return self.testbed.through_downlink(dst, start + latency, end + latency, nbytes,
                                             settled_s=self.now)

    # -- cloud --------------------------------------------------------------------------------
    def _arrive(self, request: Request) -> None:
        self.queue.append(request)
        self._try_batch()

    def _try_batch(self) -> None:
        if self.cloud_busy or not self.queue:
            return
        batch, tokens = [], 0
        while self.queue and (not batch or tokens + self.queue[0].tokens <= self.batch_tokens):
            request = self.queue.pop(0)
            batch.append(request)
            tokens += request.tokens
        served = [(request, *request.serve()) for request in batch]
        seconds = batch_seconds(self.cloud, [p for r in batch for p in r.passes],
                                share=self.cloud_share)
        start = self.now
        self.cloud_busy = True
        self.cloud.compute_s += seconds
        self.cloud.clock_s = start + seconds
        self.batches.append(Batch(start, start + seconds, len(batch), tokens))

        def finish():
            self.cloud_busy = False
            for request, reply, nbytes, follow_up in served:
                proc = self._processes[request.device]
                if reply is not None:
                    arrival = self.transmit(self.cloud, proc.device, nbytes, request.kind)
                    self.at(arrival, lambda p=proc, r=reply: self._deliver(p, r))
                if follow_up is not None:
                    self.queue.append(follow_up)
            self._try_batch()
        self.at(start + seconds, finish)
