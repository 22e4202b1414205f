"""A validated experiment before it is stored: what the create serializer hands to the actions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.devices.models import Device


@dataclass(frozen=True)
class PlannedRun:
    """One method of an experiment with its config, validated by that method's schema."""

    method: str
    config: dict[str, Any]


@dataclass(frozen=True)
class ExperimentPlan:
    """A validated experiment, ready to store and dispatch."""

    name: str
    algorithm: str
    config: dict[str, Any]
    runs: list[PlannedRun]
    testbed: str | list[dict[str, Any]]
    seed: int
    host: Device
