"""The catalogue of device profiles that the emulated testbed is made of.

Figures are effective rates for fp32 training and inference of small models (not datasheet
peaks), and typical links: edge devices on Wi-Fi to a campus server, cloud servers on 10 GbE.
A registered device may override any field.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal


@dataclass(frozen=True)
class DeviceProfile:
    """What the emulator needs to know of a device."""

    name: str
    kind: Literal["edge", "cloud"]
    compute_gflops: float  # effective GFLOP/s
    memory_mib: int
    uplink_mbps: float
    downlink_mbps: float
    rtt_ms: float
    accelerator: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> "DeviceProfile":
        """A copy with the given non-None fields replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in [
        DeviceProfile("jetson-tx2", "edge", 60.0, 8192, 20.0, 40.0, 20.0, "Pascal 256-core GPU"),
        DeviceProfile("jetson-nx", "edge", 150.0, 8192, 40.0, 80.0, 15.0, "Volta 384-core GPU"),
        DeviceProfile("jetson-agx-orin", "edge", 600.0, 32768, 100.0, 200.0, 10.0,
                      "Ampere 2048-core GPU"),
        DeviceProfile("jetson-orin-nano", "edge", 250.0, 8192, 50.0, 100.0, 15.0,
                      "Ampere 1024-core GPU"),
        DeviceProfile("a6000-server", "cloud", 8 * 9000.0, 8 * 49152, 10000.0, 10000.0, 1.0,
                      "8x NVIDIA RTX A6000"),
        DeviceProfile("h100", "cloud", 25000.0, 81920, 10000.0, 10000.0, 1.0, "NVIDIA H100"),
    ]
}


def get_profile(name: str) -> DeviceProfile:
    """The catalogue profile called ``name``; ``KeyError`` lists the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
