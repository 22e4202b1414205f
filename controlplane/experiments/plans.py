"""A validated experiment before it is stored: what the create serializer hands to the actions."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.devices.models import Device


@dataclass(frozen=True)
class PlannedRun:
    """One method of an experiment with its config, validated by that method's schema."""

    method: str
    config: dict[str, Any]
    #: Distributed runs: one ``ml.distributed.Slot.as_dict()`` per rank, rank 0 first.
    placement: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ExperimentPlan:
    """A validated experiment, ready to store and dispatch."""

    name: str
    algorithm: str
    config: dict[str, Any]
    runs: list[PlannedRun]
    testbed: str | list[dict[str, Any]]
    seed: int
    #: The emulated runs' host; a distributed experiment's coordinator device.
    host: Device
    execution: str = "emulated"
