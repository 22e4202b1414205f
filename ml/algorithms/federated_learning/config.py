"""FedAvg's config: its knobs on top of the shared federated ones (ml.fl.config)."""
from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ml.fl.config import FederatedConfig


class FedAvgConfig(FederatedConfig):
    """FedAvg's knobs on top of the shared federated ones."""

    clients_per_round: float = Field(
        default=1.0, gt=0,
        description="Workers per round: a value <= 1 is a fraction of the workers, a larger "
                    "value a count")
    local_epochs: int = Field(default=1, ge=1, le=1000, description="Local epochs per round (E)")

    @field_validator("clients_per_round")
    @classmethod
    def _count_fits(cls, value: float, info: ValidationInfo) -> float:
        workers = info.data.get("workers")
        if value > 1 and (value != int(value) or (workers is not None and value > workers)):
            raise PydanticCustomError(
                "clients_per_round", "a value > 1 is a count of workers: it must be a whole "
                "number <= workers ({workers}), got {value}", {"workers": workers, "value": value})
        return value
