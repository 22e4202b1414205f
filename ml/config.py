"""Method configs: pydantic models validated once at the edge, trusted inside.

Every method's config subclasses :class:`MethodConfig`, so the keys shared by all methods
(``rounds``, ``workers``, ``seed``, ``dataset``, ``partition``, ``testbed``, ``device``) keep
one name and one meaning everywhere. The JSON schema the control plane serves and the form the
dashboard renders both come from :meth:`Method.json_schema`.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from ml.testbed.presets import check_testbed_spec
from ml.validation import ConfigError, ProfileOverride, validate_strictly

__all__ = ["ConfigError", "MethodConfig", "ProfileOverride", "parse_config", "validate_strictly"]


class MethodConfig(BaseModel):
    """Keys every method shares. Subclasses add their own fields with bounds and descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    #: Methods with a server role (a cloud device) set this; their testbed must have one.
    needs_server: ClassVar[bool] = False

    seed: int = Field(default=0, ge=0, description="Seed for data partition, init and sampling")
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="Torch device")
    testbed: str | list[ProfileOverride] = Field(
        default="jetson80",
        description="A preset name (see ml.testbed.presets) or a list of device profiles",
    )

    @field_validator("testbed")
    @classmethod
    def _known_testbed(cls, value):
        try:
            check_testbed_spec(value, need_server=cls.needs_server)
        except ValueError as exc:
            raise PydanticCustomError("testbed", str(exc)) from None
        return value


def parse_config(cls: type[MethodConfig], values: dict[str, Any] | None) -> MethodConfig:
    """Validate ``values`` against ``cls``; raise :class:`ConfigError` naming each bad field.

    Strictly, as JSON: ``true`` is not an integer, ``"3"`` is not a number and ``3`` is not a
    string (pydantic's strict mode on the JSON text, which still reads arrays and enum values).
    """
    try:
        return validate_strictly(cls, values or {})
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "config"
            errors.setdefault(field, err["msg"])
        raise ConfigError(errors) from None
