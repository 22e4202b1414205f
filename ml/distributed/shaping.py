"""Link shaping: a rank's uplink rate and latency applied to what it sends.

Each message of ``n`` bytes (payload and framing) first occupies the sender's uplink for
``n / rate`` seconds, after any earlier message (a token bucket of depth zero: the sender is
busy while its NIC serialises, as in the emulator), then takes ``rtt / 2`` to reach the other
end, during which the sender goes on. So a shaped rank behaves like the emulated device's link:
``arrival = start + rtt / 2 + n / rate``. Ours, unlike the emulator: the rate is the sender's
uplink alone (the receiver's downlink is not shaped) and the latency is the sender's half RTT,
so a round trip between two shaped ranks costs ``rtt_a / 2 + rtt_b / 2``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ml.testbed.profiles import PROFILES


@dataclass(frozen=True)
class LinkShape:
    """What a shaped rank applies to its sends."""

    uplink_bytes_per_s: float
    rtt_s: float  # latency rtt/2 per message + size/rate

    def __post_init__(self) -> None:
        if not self.uplink_bytes_per_s > 0 or not self.rtt_s >= 0:
            raise ValueError(f"need uplink_bytes_per_s > 0 and rtt_s >= 0, got {self}")

    @classmethod
    def of_profile(cls, profile: dict) -> "LinkShape":
        """The shape of a testbed entry (``uplink_mbps``, ``rtt_ms``; missing fields from the
        catalogue profile it names)."""
        base = PROFILES.get(profile.get("profile", ""))
        uplink = profile.get("uplink_mbps") or (base.uplink_mbps if base else None)
        rtt = profile.get("rtt_ms")
        if rtt is None and base is not None:
            rtt = base.rtt_ms
        if uplink is None or rtt is None:
            raise ValueError(f"profile {profile!r} gives no uplink_mbps and rtt_ms")
        return cls(uplink_bytes_per_s=float(uplink) * 1e6 / 8, rtt_s=float(rtt) / 1e3)

    @property
    def latency_s(self) -> float:
        return self.rtt_s / 2

    def serialisation_s(self, nbytes: int) -> float:
        return nbytes / self.uplink_bytes_per_s


class Shaper:
    """When each message may leave (``busy_until``) and reach its peer (``release_at``)."""

    def __init__(self, shape: LinkShape, clock: Callable[[], float] = time.monotonic):
        self.shape = shape
        self.clock = clock
        self._free_at = 0.0

    def schedule(self, nbytes: int) -> tuple[float, float]:
        """Book the uplink for a message of ``nbytes`` sent now: ``(busy_until, release_at)``
        on the shaper's clock. The sender blocks until ``busy_until``; the message is handed
        to the transport at ``release_at``."""
        start = max(self.clock(), self._free_at)
        self._free_at = start + self.shape.serialisation_s(nbytes)
        return self._free_at, self._free_at + self.shape.latency_s
