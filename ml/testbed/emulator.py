"""The emulated testbed: one clock per device, links between them, and traffic counters.

Time model (as the USTC group's code and FedScale do it):

- **Compute.** ``compute(device, flops)`` advances the device's clock by
  ``flops / (compute_gflops * 1e9)`` seconds. This FLOP-based mode is the default because it is
  deterministic and independent of the host. ``compute_measured(device, host_seconds)`` is the
  other mode, for work whose FLOPs are unknown: host wall time scaled by
  ``host_gflops / compute_gflops`` (the testbed must be given ``host_gflops``); it is not
  deterministic.
- **Links (ours).** A device's ``rtt_ms`` is its round trip to the rest of the testbed; the link
  between two devices has the larger of the two RTTs (the slower access network dominates) and
  the bandwidth ``min(src.uplink_mbps, dst.downlink_mbps)``.
- **Transfer.** A message of ``nbytes`` sent at ``start = src.clock`` arrives, on an idle
  receiver, at::

      arrival = start + rtt_ms / 2 / 1e3 + nbytes * 8 / (min(src.uplink, dst.downlink) * 1e6)

  (one-way latency is half the RTT). The sender is busy only while its own NIC serialises the
  message, ``nbytes * 8 / (src.uplink_mbps * 1e6)``, so a server can fan a model out to many
  workers in parallel, limited by its own uplink; the receiver's clock moves to
  ``max(dst.clock, arrival)``: nothing is received before it was sent. :meth:`Testbed.send` and
  :meth:`Testbed.receive` are the two halves, for a receiver that takes messages one at a time
  in arrival order (SplitFed's server).
- **Contention at the receiver (ours).** A device's downlink is one shared link: every message
  to it occupies ``nbytes * 8 / (dst.downlink_mbps * 1e6)`` seconds of it, in the earliest gap
  from the moment its first bit can arrive (:class:`LinkSchedule`), and is not complete before
  that occupation ends. Below the downlink's capacity this changes nothing (a single message
  always arrives as above); above it, messages queue. So many workers uploading to a server
  whose access link (``downlink_mbps``) is smaller than the sum of their uplinks see the
  parameter-server bottleneck that ParallelSFL is built to avoid. The sender-side counterpart is
  the serialisation above. Messages are placed in the order they are sent, each into the first
  gap that fits (work-conserving, no pre-emption); the delay that queueing added is booked per
  receiver in :attr:`Testbed.ingress_delay_s`.
- **Barrier.** A synchronous step waits for the slowest participant: ``barrier(devices)`` sets
  every clock to the largest and books the difference as that device's waiting time.

Every advance of a device's clock is booked to exactly one of ``compute_s``, ``sending_s``,
``receiving_s`` (waiting for a message to arrive) and ``waiting_s`` (idle in a barrier), so
``clock_s`` equals their sum. The module imports nothing heavy.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Literal

from ml.testbed.profiles import DeviceProfile

Direction = Literal["up", "down", "peer"]


@dataclass(eq=False)
class EmulatedDevice:
    """One device of the testbed with its own clock (seconds since the run started)."""

    name: str
    profile: DeviceProfile
    clock_s: float = 0.0
    compute_s: float = 0.0
    sending_s: float = 0.0
    receiving_s: float = 0.0
    waiting_s: float = 0.0

    @property
    def kind(self) -> str:
        return self.profile.kind

    @property
    def busy_s(self) -> float:
        """Time spent computing or sending."""
        return self.compute_s + self.sending_s

    def as_dict(self) -> dict:
        return {**self.profile.as_dict(), "name": self.name, "profile": self.profile.name}


@dataclass(frozen=True)
class TrafficKey:
    src: str
    dst: str
    direction: Direction
    kind: str


@dataclass
class TrafficLedger:
    """Bytes and message counts per (src, dst, direction, kind)."""

    bytes: dict[TrafficKey, int] = field(default_factory=lambda: defaultdict(int))
    messages: dict[TrafficKey, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, key: TrafficKey, nbytes: int) -> None:
        self.bytes[key] += nbytes
        self.messages[key] += 1

    def total(self) -> int:
        """All bytes sent so far."""
        return sum(self.bytes.values())

    def by_kind(self) -> dict[str, int]:
        return self._group(lambda k: k.kind)

    def by_direction(self) -> dict[str, int]:
        return self._group(lambda k: k.direction)

    def of_device(self, name: str) -> dict[str, int]:
        """Bytes ``name`` sent (``sent``) and received (``received``)."""
        return {
            "sent": sum(b for k, b in self.bytes.items() if k.src == name),
            "received": sum(b for k, b in self.bytes.items() if k.dst == name),
        }

    def _group(self, keyfn) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for key, nbytes in self.bytes.items():
            out[keyfn(key)] += nbytes
        return dict(sorted(out.items()))


class LinkSchedule:
    """Busy intervals of one shared link, each message placed in the earliest gap that fits.

    Intervals are kept sorted, disjoint and merged when they touch, so a link that is busy
    without pause is one interval however many messages crossed it.
    """

    #: Intervals a schedule may hold before its owner forgets the settled ones.
    FORGET_AT = 16

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.forget_at = self.FORGET_AT

    def reserve(self, ready_s: float, duration_s: float) -> float:
        """Occupy the link for ``duration_s`` from the first free moment at or after
        ``ready_s``; return the end of the occupation."""
        i = bisect_right(self.ends, ready_s)
        t = ready_s
        while i < len(self.starts) and self.starts[i] < t + duration_s:
            t = max(t, self.ends[i])
            i += 1
        end = t + duration_s
        if duration_s <= 0:
            return end
        touches_prev = i > 0 and self.ends[i - 1] >= t
        touches_next = i < len(self.starts) and self.starts[i] <= end
        if touches_prev and touches_next:
            self.ends[i - 1] = self.ends.pop(i)
            self.starts.pop(i)
        elif touches_prev:
            self.ends[i - 1] = end
        elif touches_next:
            self.starts[i] = t
        else:
            self.starts.insert(i, t)
            self.ends.insert(i, end)
        return end

    def forget_before(self, t: float) -> None:
        """Drop intervals that end by ``t`` (no message can be sent before ``t`` any more)."""
        keep = bisect_right(self.ends, t)
        if keep:
            del self.starts[:keep], self.ends[:keep]

    def __len__(self) -> int:
        return len(self.starts)


class Testbed:
    """Devices with clocks, the links between them, and the traffic they carried.

    ``workers`` are the devices that train (edge devices, in order), ``server`` the device that
    coordinates (the first cloud device), ``devices`` all of them.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, workers: list[EmulatedDevice], server: EmulatedDevice | None,
                 others: Iterable[EmulatedDevice] = (), host_gflops: float | None = None):
        self.workers = list(workers)
        self.server = server
        self.devices: list[EmulatedDevice] = []
        seen: set[int] = set()  # by identity: 10,000 workers must not cost a quadratic scan
        for d in [*self.workers, *([server] if server is not None else []), *others]:
            if id(d) not in seen:
                seen.add(id(d))
                self.devices.append(d)
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ValueError(f"device names must be unique, got {names}")
        self.traffic = TrafficLedger()
        self.host_gflops = host_gflops
        self._ingress: dict[str, LinkSchedule] = defaultdict(LinkSchedule)
        #: Seconds that queueing on each receiver's downlink added to its messages' arrivals.
        self.ingress_delay_s: dict[str, float] = defaultdict(float)

    # -- compute -------------------------------------------------------------------------------

    @staticmethod
    def compute_time(device: EmulatedDevice, flops: float) -> float:
        """Seconds ``device`` needs for ``flops`` (without advancing its clock)."""
        return float(flops) / (device.profile.compute_gflops * 1e9)

    def compute(self, device: EmulatedDevice, flops: float) -> float:
        """Advance ``device``'s clock by the time its rate needs for ``flops``; return it."""
        seconds = self.compute_time(device, flops)
        device.clock_s += seconds
        device.compute_s += seconds
        return seconds

    def compute_measured(self, device: EmulatedDevice, host_seconds: float) -> float:
        """Advance ``device`` by host wall time scaled to its speed (``host_gflops`` needed)."""
        if self.host_gflops is None:
            raise ValueError("compute_measured needs the testbed's host_gflops")
        seconds = host_seconds * self.host_gflops / device.profile.compute_gflops
        device.clock_s += seconds
        device.compute_s += seconds
        return seconds

    # -- links ---------------------------------------------------------------------------------

    @staticmethod
    def latency_s(src: EmulatedDevice, dst: EmulatedDevice) -> float:
        """One-way latency of the link: half the larger RTT of the two ends."""
        return max(src.profile.rtt_ms, dst.profile.rtt_ms) / 2 / 1e3

    @staticmethod
    def bandwidth_bps(src: EmulatedDevice, dst: EmulatedDevice) -> float:
        """Bits per second of the link: the sender's uplink or the receiver's downlink."""
        return min(src.profile.uplink_mbps, dst.profile.downlink_mbps) * 1e6

    def transfer_time(self, src: EmulatedDevice, dst: EmulatedDevice, nbytes: int) -> float:
        """Seconds from sending to full arrival of ``nbytes`` on an idle receiver (latency +
        bytes / bandwidth)."""
        return self.latency_s(src, dst) + nbytes * 8 / self.bandwidth_bps(src, dst)

    @staticmethod
    def direction(src: EmulatedDevice, dst: EmulatedDevice) -> Direction:
        if src.kind == "edge" and dst.kind == "cloud":
            return "up"
        if src.kind == "cloud" and dst.kind == "edge":
            return "down"
        return "peer"

    def send(self, src: EmulatedDevice, dst: EmulatedDevice, nbytes: int,
             kind: str = "model") -> float:
        """Send ``nbytes`` from ``src`` now; count them; return the arrival time at ``dst``.

        Advances only the sender (by its serialisation time); see :meth:`receive`. The message
        takes its share of ``dst``'s downlink (see the module's contention model).
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if src is dst:
            return src.clock_s
        first_bit = src.clock_s + self.latency_s(src, dst)
        arrival = self.through_downlink(dst, first_bit,
                                        first_bit + nbytes * 8 / self.bandwidth_bps(src, dst),
                                        nbytes)
        busy = nbytes * 8 / (src.profile.uplink_mbps * 1e6)
        src.clock_s += busy
        src.sending_s += busy
        key = TrafficKey(src.name, dst.name, self.direction(src, dst), kind)
        self.traffic.add(key, int(nbytes))
        return arrival

    def through_downlink(self, dst: EmulatedDevice, first_bit_s: float, alone_s: float,
                         nbytes: int, settled_s: float | None = None) -> float:
        """Arrival of a message at ``dst`` once it has shared ``dst``'s downlink.

        ``first_bit_s`` is when its first bit can reach ``dst``, ``alone_s`` when it would be
        complete on an idle downlink. Reserves the downlink (see the module's contention model),
        books the queueing in :attr:`ingress_delay_s` and returns the arrival time.
        ``settled_s``: no later message will be sent before it (default: the earliest device
        clock), so the link's schedule before it can be forgotten.
        """
        link = self._ingress[dst.name]
        if settled_s is not None:
            link.forget_before(settled_s)
        elif len(link) >= link.forget_at:
            # The earliest clock costs a pass over every device: taken only when the schedule
            # has doubled since the last time, so a round of N uploads stays O(N). Keeping
            # settled intervals longer changes no arrival (reserve skips what ended before
            # its ready time, which is never before the earliest clock).
            link.forget_before(min(d.clock_s for d in self.devices))
            link.forget_at = max(LinkSchedule.FORGET_AT, 2 * len(link))
        drained = link.reserve(first_bit_s, nbytes * 8 / (dst.profile.downlink_mbps * 1e6))
        arrival = max(alone_s, drained)
        self.ingress_delay_s[dst.name] += arrival - alone_s
        return arrival

    @staticmethod
    def receive(dst: EmulatedDevice, arrival_s: float) -> float:
        """``dst`` takes a message that arrives at ``arrival_s``; return its new clock."""
        if arrival_s > dst.clock_s:
            dst.receiving_s += arrival_s - dst.clock_s
            dst.clock_s = arrival_s
        return dst.clock_s

    def transfer(self, src: EmulatedDevice, dst: EmulatedDevice, nbytes: int,
                 kind: str = "model") -> float:
        """Send and receive ``nbytes``; return the seconds from sending to arrival (latency +
        bytes / bandwidth, plus any queueing on ``dst``'s downlink)."""
        if src is dst:
            return 0.0
        start = src.clock_s
        arrival = self.send(src, dst, nbytes, kind)
        self.receive(dst, arrival)
        return arrival - start

    # -- synchronisation -----------------------------------------------------------------------

    @staticmethod
    def wait_until(device: EmulatedDevice, t: float) -> None:
        """Idle ``device`` until time ``t`` (booked as waiting)."""
        if t > device.clock_s:
            device.waiting_s += t - device.clock_s
            device.clock_s = t

    def barrier(self, devices: Iterable[EmulatedDevice]) -> float:
        """Synchronise ``devices`` at the slowest one's clock; return that time."""
        devices = list(devices)
        if not devices:
            return self.now()
        t = max(d.clock_s for d in devices)
        for d in devices:
            self.wait_until(d, t)
        return t

    def now(self) -> float:
        """The testbed's time: the latest clock of any device."""
        return max((d.clock_s for d in self.devices), default=0.0)

    def require_server(self) -> EmulatedDevice:
        if self.server is None:
            raise ValueError("this testbed has no cloud device to act as the server")
        return self.server

    def describe(self) -> list[dict]:
        """The devices as JSON (for a run's result), workers first, then the server."""
        return [{**d.as_dict(), "role": self._role(d)} for d in self.devices]

    def _role(self, device: EmulatedDevice) -> str:
        if device is self.server:
            return "server"
        return "worker" if any(device is w for w in self.workers) else "idle"
