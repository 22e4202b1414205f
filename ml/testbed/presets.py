"""Named testbeds of the papers, and turning a config's ``testbed`` into emulated devices.

Presets (each a function returning the device list, so parameters can be changed):

- ``jetson80``: 30 Jetson TX2, 40 Jetson NX, 10 Jetson AGX Orin and one A6000 server, the
  80-device platform of ParallelSFL, MergeSFL and FedSpine (arXiv 2410.01256, 2311.13348,
  2501.02438).
- ``jetson30-a6000``: 30 Jetsons and a server with 8 A6000 GPUs, HAT's testbed (arXiv 2503.18989).
  The paper does not say which Jetsons; 10 TX2, 10 NX and 10 AGX Orin is ours.
- ``cross-region-4``: four cloud regions of one GPU each (CoCoDC's four workers), linked by a WAN
  of ``bandwidth_mbps`` (default 1 Gbit/s) and ``rtt_ms`` (default 100 ms); see
  :func:`cross_region`.
- ``local-3``: two edge devices and one cloud server, for demos.

A preset with parameters takes them after a colon, e.g. ``cross-region-4:bandwidth_mbps=100,
rtt_ms=250`` or ``jetson80:server_mbps=250`` (ours), so a config's ``testbed`` string can set
them.

Roles (ours): the edge devices, in order, are the workers and the first cloud device is the
server. A testbed of cloud devices only (``cross-region-4``) has all of them as workers, the
first one doubling as the coordinator. Other cloud devices stay in ``Testbed.devices``, idle.
"""
from __future__ import annotations

import inspect
import math
from collections import Counter
from typing import Any, Callable

from pydantic import ValidationError

from ml.validation import ConfigError, ProfileOverride, validate_strictly
from ml.testbed.emulator import EmulatedDevice, Testbed
from ml.testbed.profiles import PROFILES, DeviceProfile

_OVERRIDE_FIELDS = ("kind", "compute_gflops", "memory_mib", "uplink_mbps", "downlink_mbps",
                    "rtt_ms")


def _many(profile: str, count: int) -> list[ProfileOverride]:
    return [ProfileOverride(profile=profile, name=f"{profile}-{i:02d}")
            for i in range(1, count + 1)]


def _a6000_server(server_mbps: float) -> ProfileOverride:
    return ProfileOverride(profile="a6000-server", name="a6000-server",
                           uplink_mbps=server_mbps, downlink_mbps=server_mbps)


def jetson80(server_mbps: float = 10_000.0) -> list[ProfileOverride]:
    """30 Jetson TX2, 40 Jetson NX, 10 Jetson AGX Orin and one A6000 server.

    ``server_mbps`` is the server's access link in each direction, shared by every worker (the
    emulator queues messages beyond it): the default 10 GbE never limits 80 Jetsons; a campus
    uplink or one Wi-Fi access point (a few hundred Mbit/s) makes the server a bottleneck.
    """
    return (_many("jetson-tx2", 30) + _many("jetson-nx", 40) + _many("jetson-agx-orin", 10)
            + [_a6000_server(server_mbps)])


def jetson30_a6000(server_mbps: float = 10_000.0) -> list[ProfileOverride]:
    """30 Jetsons (10 TX2, 10 NX, 10 AGX Orin: ours) and a server with 8 A6000 GPUs.

    ``server_mbps``: the server's shared access link, as in :func:`jetson80`.
    """
    return (_many("jetson-tx2", 10) + _many("jetson-nx", 10) + _many("jetson-agx-orin", 10)
            + [_a6000_server(server_mbps)])


REGIONS = ("us-east", "eu-west", "ap-northeast", "us-west", "eu-central", "ap-southeast",
           "sa-east", "ca-central")


def cross_region(regions: int = 4, bandwidth_mbps: float = 1000.0, rtt_ms: float = 100.0,
                 profile: str = "h100") -> list[ProfileOverride]:
    """``regions`` cloud regions of one ``profile`` GPU each, joined by a WAN link.

    Every region's uplink and downlink is ``bandwidth_mbps`` and its RTT ``rtt_ms``, so the link
    between any two regions has exactly these figures (see the emulator's link model).
    """
    if not 1 <= regions <= len(REGIONS):
        raise ValueError(f"regions must be in 1..{len(REGIONS)}, got {regions}")
    return [ProfileOverride(profile=profile, name=f"region-{REGIONS[i]}",
                            uplink_mbps=bandwidth_mbps, downlink_mbps=bandwidth_mbps, rtt_ms=rtt_ms)
            for i in range(regions)]


def local3() -> list[ProfileOverride]:
    """A Jetson NX, a Jetson Orin Nano and an A6000 server."""
    return [ProfileOverride(profile="jetson-nx", name="jetson-nx-01"),
            ProfileOverride(profile="jetson-orin-nano", name="jetson-orin-nano-01"),
            ProfileOverride(profile="a6000-server", name="a6000-server")]


#: Preset name -> function building its device list.
PRESETS: dict[str, Callable[[], list[ProfileOverride]]] = {
    "jetson80": jetson80,
    "jetson30-a6000": jetson30_a6000,
    "cross-region-4": cross_region,
    "local-3": local3,
}

TestbedSpec = str | list[ProfileOverride | dict[str, Any]]


def resolve_testbed(spec: TestbedSpec, workers: int | None = None,
                    host_gflops: float | None = None) -> Testbed:
    """Build the emulated testbed for a config's ``testbed`` value.

    ``spec`` is a preset name or a list of profile overrides (dicts are validated). ``workers``
    picks how many worker devices the method uses: ``None`` takes all; fewer than there are
    takes a deterministic subset stratified by profile (largest-remainder quotas, the first
    devices of each profile, in their original order); more cycles through them, naming the
    copies ``<name>.2``, ``<name>.3``...

    Raises :class:`ml.config.ConfigError` naming the faulty field (``testbed``,
    ``testbed.<i>.profile``, ``workers``).
    """
    items = _spec_items(spec)
    devices = [EmulatedDevice(name, profile) for name, profile in _profiles(items)]
    edges = [d for d in devices if d.kind == "edge"]
    clouds = [d for d in devices if d.kind == "cloud"]
    if edges:
        pool, server, others = edges, (clouds[0] if clouds else None), clouds[1:]
    else:
        pool, server, others = clouds, clouds[0], clouds[1:]
    if workers is not None:
        if workers < 1:
            raise ConfigError({"workers": f"must be >= 1, got {workers}"})
        pool = _choose_workers(pool, workers)
    return Testbed(pool, server, others=others, host_gflops=host_gflops)


def check_testbed_spec(spec: TestbedSpec, need_server: bool = False) -> None:
    """Raise ``ValueError`` (for a pydantic validator) if ``spec`` names no valid testbed."""
    try:
        testbed = resolve_testbed(spec)
    except ConfigError as exc:
        raise ValueError("; ".join(exc.errors.values())) from None
    if need_server and testbed.server is None:
        raise ValueError("this method needs a cloud device to act as the server; the testbed "
                         "has none")


def preset_devices(spec: str) -> list[ProfileOverride]:
    """The devices of preset string ``spec``: ``NAME`` or ``NAME:key=value,key=value``.

    The keys are the preset function's parameters (e.g. ``bandwidth_mbps`` and ``rtt_ms`` of
    ``cross-region-4``); values take the type of the parameter's default. Raises
    :class:`ConfigError` naming ``testbed``.
    """
    name, _, params = spec.partition(":")
    if name not in PRESETS:
        raise ConfigError({"testbed": f"unknown testbed preset {name!r}; known: "
                                      f"{', '.join(PRESETS)}"})
    build = PRESETS[name]
    accepted = {p.name: p.default for p in inspect.signature(build).parameters.values()}
    kwargs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in params.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in accepted:
            known = ", ".join(accepted) or "none"
            raise ConfigError({"testbed": f"preset {name!r} got {item!r}; it takes key=value "
                                          f"parameters among: {known}"})
        kwargs[key] = _preset_parameter(name, key, raw.strip(), type(accepted[key]))
    try:
        return build(**kwargs)
    except ValidationError as exc:
        # The model's field (uplink_mbps) is not what the user wrote: name the parameters.
        given = ",".join(f"{k}={v}" for k, v in kwargs.items())
        err = exc.errors()[0]
        raise ConfigError({"testbed": f"preset {name!r}: {given}: {err['msg']}"}) from None
    except ValueError as exc:
        raise ConfigError({"testbed": f"preset {name!r}: {exc}"}) from None


def _preset_parameter(preset: str, key: str, raw: str, kind: type) -> Any:
    """``raw`` as the preset parameter's type: an int is digits, a float a finite number."""
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)):
        noun = "a finite number" if kind is float else f"a valid {kind.__name__}"
        raise ConfigError({"testbed": f"preset {preset!r}: {key}={raw!r} is not {noun}"})
    return value


def _spec_items(spec: TestbedSpec) -> list[ProfileOverride]:
    if isinstance(spec, str):
        return preset_devices(spec)
    if not spec:
        raise ConfigError({"testbed": "the device list is empty"})
    items = []
    for i, item in enumerate(spec):
        try:
            items.append(item if isinstance(item, ProfileOverride)
                         else validate_strictly(ProfileOverride, item))
        except ValidationError as exc:
            err = exc.errors()[0]
            path = ".".join(str(p) for p in ("testbed", i, *err["loc"]))
            raise ConfigError({path: err["msg"]}) from None
    return items


def _profiles(items: list[ProfileOverride]) -> list[tuple[str, DeviceProfile]]:
    out: list[tuple[str, DeviceProfile]] = []
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    for i, item in enumerate(items):
        if item.profile not in PROFILES:
            raise ConfigError({f"testbed.{i}.profile": f"unknown profile {item.profile!r}; known: "
                                                       f"{', '.join(sorted(PROFILES))}"})
        counts[item.profile] += 1
        name = item.name or f"{item.profile}-{counts[item.profile]:02d}"
        if name in seen:
            raise ConfigError({f"testbed.{i}.name": f"duplicate device name {name!r}"})
        seen.add(name)
        overrides = {f: getattr(item, f) for f in _OVERRIDE_FIELDS}
        out.append((name, PROFILES[item.profile].with_overrides(**overrides)))
    return out


def _choose_workers(pool: list[EmulatedDevice], count: int) -> list[EmulatedDevice]:
    if count == len(pool):
        return pool
    if count > len(pool):
        chosen = []
        for i in range(count):
            base = pool[i % len(pool)]
            lap = i // len(pool)
            chosen.append(base if lap == 0
                          else EmulatedDevice(f"{base.name}.{lap + 1}", base.profile))
        return chosen
    groups: dict[str, list[int]] = {}
    for i, device in enumerate(pool):
        groups.setdefault(device.profile.name, []).append(i)
    exact = {k: count * len(v) / len(pool) for k, v in groups.items()}
    quota = {k: int(x) for k, x in exact.items()}
    order = sorted(groups, key=lambda k: (-(exact[k] - quota[k]), list(groups).index(k)))
    for k in order[:count - sum(quota.values())]:
        quota[k] += 1
    picked = sorted(i for k, idx in groups.items() for i in idx[:quota[k]])
    return [pool[i] for i in picked]
