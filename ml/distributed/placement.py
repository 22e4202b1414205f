"""Where the roles of a distributed run go, and the emulated testbed equivalent to it.

The rule lives here once, for the control plane and ``launch_local`` alike: rank 0 is the
coordinator (a cloud device); the first ``k = min(len(edges), workers)`` worker devices get ranks
``1..k``; virtual worker ``w`` goes to rank ``1 + (w % k)``. Worker devices are edge devices,
or cloud devices for programs whose ``RoleProgram.worker_kind`` is ``"cloud"`` (cross-region
training: one cloud server per region). :func:`testbed_of` turns a placement into the config
``testbed`` of its emulated twin, so the same seed gives the same accuracy curve.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ml.testbed.profiles import PROFILES


class PlacementError(ValueError):
    """The roles cannot be placed; ``field`` names the request field to blame."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Slot:
    """One entry of a run's placement (what the API shows and what every rank is given)."""

    role: str  # "coordinator" | "worker"
    rank: int  # 0 for the coordinator, 1..n for workers
    device: str  # the control plane's device id; any unique string in ml-only use
    name: str  # the device's name; metric names use it (traffic_bytes/<name>)
    profile: dict  # the device's testbed entry (ml.config.ProfileOverride fields)
    workers: tuple[int, ...]  # virtual worker indices this rank hosts; () for the coordinator

    def as_dict(self) -> dict:
        return {"role": self.role, "rank": self.rank, "device": self.device, "name": self.name,
                "profile": dict(self.profile), "workers": list(self.workers)}

    @classmethod
    def from_dict(cls, d: dict) -> "Slot":
        """The slot of ``d`` (as :meth:`as_dict` writes it); ValueError on a malformed one."""
        try:
            role, rank, device, name = d["role"], d["rank"], d["device"], d["name"]
            profile, workers = d["profile"], d["workers"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"placement slot lacks {exc}") from None
        if role not in ("coordinator", "worker"):
            raise ValueError(f"slot role must be coordinator or worker, got {role!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ValueError(f"slot rank must be an integer >= 0, got {rank!r}")
        if not isinstance(device, str) or not isinstance(name, str) or not name:
            raise ValueError("slot device and name must be strings")
        if not isinstance(profile, dict) or not isinstance(workers, (list, tuple)) or any(
                isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in workers):
            raise ValueError("slot profile must be an object and workers a list of indices")
        return cls(role, rank, device, name, dict(profile), tuple(workers))


def supports_distributed(method: str) -> bool:
    """True for methods that have role programs (``Method.program`` set in the catalogue)."""
    from ml import registry  # the registry imports every algorithm; only when asked

    try:
        return registry.get(method).program is not None
    except registry.UnknownMethod:
        return False


def single_device_placement(device: dict) -> list[Slot]:
    """The placement of a single-device method (no role program, e.g. ``comp``): the whole run
    on ``device`` (``{"device", "name", "profile"}``) as rank 0, with no workers."""
    return [Slot("coordinator", 0, str(device["device"]), str(device["name"]),
                 dict(device["profile"]), ())]


def worker_kind(method: str) -> str:
    """The kind of device (``edge`` or ``cloud``) that hosts ``method``'s workers."""
    from ml import registry  # the registry imports every algorithm; only when asked

    return getattr(registry.get(method).program, "worker_kind", "edge")


def _kind(entry: dict, field: str) -> str:
    """The kind of device ``entry`` (see :func:`_profile_kind`); PlacementError on ``field``
    when its profile is unknown."""
    profile = entry.get("profile", {}) if isinstance(entry, dict) else {}
    if not isinstance(profile, dict):
        profile = {}
    kind = _profile_kind(profile)
    if kind is None:
        raise PlacementError(field, f"device {entry.get('name')!r} has no known profile "
                                    f"({profile.get('profile')!r})")
    return kind


def plan_placement(method: str, config: dict, coordinator: dict,
                   edges: list[dict]) -> list[Slot]:
    """Place ``method``'s roles: ``coordinator`` gets rank 0, ``edges`` (the worker devices:
    edge devices, or cloud ones where the method's workers are cloud servers, see
    :func:`worker_kind`) ranks 1..k.

    ``coordinator`` and each of ``edges`` are ``{"device", "name", "profile"}``; ``config``
    needs ``workers`` (default 10, the federated default). Raises :class:`PlacementError`
    naming the field: ``execution`` (method not distributed), ``devices`` (no cloud
    coordinator, no worker device, a worker device of the wrong kind, a device twice),
    ``workers`` (not a positive integer).
    """
    if not supports_distributed(method):
        raise PlacementError("execution", f"method {method!r} runs on one device; place it "
                                          "with single_device_placement")
    workers = config.get("workers", 10)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PlacementError("workers", f"must be an integer >= 1, got {workers!r}")
    if not coordinator:
        raise PlacementError("devices", "a distributed run needs a cloud device for its "
                                        "coordinator")
    if _kind(coordinator, "devices") != "cloud":
        raise PlacementError("devices", f"the coordinator {coordinator.get('name')!r} must be "
                                        "a cloud device")
    kind = worker_kind(method)
    if not edges:
        raise PlacementError("devices", f"a distributed run needs at least one {kind} device "
                                        "for its workers")
    seen = {coordinator.get("device")}
    for edge in edges:
        if _kind(edge, "devices") != kind:
            raise PlacementError("devices", f"worker device {edge.get('name')!r} is not "
                                            f"{'an' if kind == 'edge' else 'a'} {kind} device")
        if edge.get("device") in seen:
            raise PlacementError("devices", f"device {edge.get('name')!r} is placed twice")
        seen.add(edge.get("device"))
    k = min(len(edges), workers)
    slots = [Slot("coordinator", 0, str(coordinator["device"]), str(coordinator["name"]),
                  dict(coordinator["profile"]), ())]
    for r, edge in enumerate(edges[:k], start=1):
        slots.append(Slot("worker", r, str(edge["device"]), str(edge["name"]),
                          dict(edge["profile"]), tuple(range(r - 1, workers, k))))
    return slots


def testbed_of(placement: list[Slot]) -> list[dict]:
    """The config ``testbed`` of a placement's emulated twin: the coordinator's profile as the
    server, then one entry per virtual worker in index order, with its host's profile (a
    single-device placement gives the one device).

    A device hosting several virtual workers appears once per worker, the first under its own
    name and the others as ``<name>.2``, ``<name>.3`` ... (names must be unique in a testbed).
    Where the workers are cloud devices as the coordinator is (cross-region training), the
    coordinator is left out: a testbed of cloud devices only has all of them as workers
    (ml.testbed.presets), the first doubling as the server.
    """
    coordinator = next((s for s in placement if s.role == "coordinator"), None)
    if coordinator is None:
        raise PlacementError("devices", "the placement has no coordinator")
    hosts: dict[int, Slot] = {}
    for slot in placement:
        for w in slot.workers:
            if w in hosts:
                raise PlacementError("devices", f"worker {w} is placed twice")
            hosts[w] = slot
    if sorted(hosts) != list(range(len(hosts))):
        raise PlacementError("devices", "the placement's workers are not 0..n-1")
    entries = [_entry(coordinator.profile, coordinator.name)]
    if hosts and all(_profile_kind(s.profile) == "cloud"
                     for s in [coordinator, *hosts.values()]):
        entries = []
    copies: dict[int, int] = {}
    for w in range(len(hosts)):
        slot = hosts[w]
        copies[slot.rank] = copies.get(slot.rank, 0) + 1
        n = copies[slot.rank]
        entries.append(_entry(slot.profile, slot.name if n == 1 else f"{slot.name}.{n}"))
    return entries


def _profile_kind(profile: dict[str, Any]) -> str | None:
    """The device's own kind when its entry overrides the profile's, else the profile's; None
    for an unknown profile."""
    base = PROFILES.get(profile.get("profile", ""))
    return (profile.get("kind") or base.kind) if base else None


def _entry(profile: dict[str, Any], name: str) -> dict:
    """A testbed entry: the profile's fields that are set, under ``name``."""
    return {**{k: v for k, v in profile.items() if v is not None}, "name": name}


testbed_of.__test__ = False  # a function named test*, not a pytest test
