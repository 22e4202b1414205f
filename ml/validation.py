"""Validation shared by method configs and testbed specs: strict JSON validation, the error
that names each faulty field, and the inline device profile a testbed may list."""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer


def validate_strictly(cls: type[BaseModel], values: Any) -> Any:
    """``cls`` validated from ``values`` in pydantic's strict mode, read as the JSON it is."""
    try:
        text = json.dumps(values)
    except (TypeError, ValueError):  # not plain JSON (model instances): strict Python mode
        return cls.model_validate(values, strict=True)
    return cls.model_validate_json(text, strict=True)


class ConfigError(ValueError):
    """A config value is invalid; ``errors`` maps each faulty field (dotted path) to a message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in errors.items()))


class ProfileOverride(BaseModel):
    """One emulated device given inline: a catalogue profile name, optionally overridden."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    profile: str = Field(description="Catalogue profile name, e.g. jetson-nx")
    name: str | None = Field(default=None, description="Device name shown in metrics")
    kind: Literal["edge", "cloud"] | None = Field(
        default=None, description="edge or cloud, when the device plays another role than its "
                                  "profile's (e.g. a Jetson registered as a cloud device)")
    compute_gflops: float | None = Field(default=None, gt=0)
    memory_mib: int | None = Field(default=None, gt=0)
    uplink_mbps: float | None = Field(default=None, gt=0)
    downlink_mbps: float | None = Field(default=None, gt=0)
    rtt_ms: float | None = Field(default=None, ge=0)

    @model_serializer(mode="wrap")
    def _without_unset_kind(self, handler):
        # Most devices play their profile's kind: their stored entries stay as they were.
        data = handler(self)
        if data.get("kind") is None:
            data.pop("kind", None)
        return data
