"""Errors of a distributed run: a lost peer, a failed remote call, a broken message."""
from __future__ import annotations


class PeerLost(RuntimeError):
    """A peer rank died, disconnected or stopped answering.

    ``rank``, ``device`` (the control plane's id) and ``name`` say which; ``str()`` names the
    device, e.g. ``rank 2 (device jetson-b) stopped answering: no heartbeat for 30 s``.
    """

    def __init__(self, rank: int, device: str, name: str, detail: str):
        self.rank = rank
        self.device = device
        self.name = name
        self.detail = detail
        super().__init__(f"rank {rank} (device {name}) stopped answering: {detail}")

    def as_dict(self) -> dict:
        return {"rank": self.rank, "device": self.device, "name": self.name,
                "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict) -> "PeerLost":
        return cls(int(d["rank"]), str(d["device"]), str(d["name"]), str(d["detail"]))


class RemoteError(RuntimeError):
    """A role on another rank failed; the message names the rank and its device."""


class ProtocolError(ValueError):
    """A message that breaks the wire format (not JSON, unknown dtype, wrong sizes ...)."""
