"""FedAvg's config: its knobs on top of the shared federated ones (ml.fl.config)."""
from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ml.fl.config import FederatedConfig

#: Models with dropout layers (a test checks this against the built models).
DROPOUT_MODELS = frozenset({"alexnet"})


class FedAvgConfig(FederatedConfig):
    """FedAvg's knobs on top of the shared federated ones."""

    clients_per_round: float = Field(
        default=1.0, gt=0,
        description="Workers per round: a value <= 1 is a fraction of the workers, a larger "
                    "value a count")
    local_epochs: int = Field(default=1, ge=1, le=1000, description="Local epochs per round (E)")
    client_threads: int = Field(
        default=1, ge=1, le=64,
        description="Emulated runtime: clients trained at once, each on its own thread with its "
                    "own model copy. Same results as 1 (each client's arithmetic is unchanged); "
                    "faster on several cores when intra-op threads x client_threads <= cores. "
                    "Not for models with dropout (they draw from one shared RNG). A distributed "
                    "rank trains its workers one at a time")

    @field_validator("clients_per_round")
    @classmethod
    def _count_fits(cls, value: float, info: ValidationInfo) -> float:
        workers = info.data.get("workers")
        if value > 1 and (value != int(value) or (workers is not None and value > workers)):
            raise PydanticCustomError(
                "clients_per_round", "a value > 1 is a count of workers: it must be a whole "
                "number <= workers ({workers}), got {value}", {"workers": workers, "value": value})
        return value

    @field_validator("client_threads")
    @classmethod
    def _threads_need_no_shared_rng(cls, value: int, info: ValidationInfo) -> int:
        model = info.data.get("model")
        if value > 1 and model in DROPOUT_MODELS:
            raise PydanticCustomError(
                "client_threads", "{model} has dropout, which draws from torch's one global "
                "RNG: clients on several threads would draw in a varying order; use 1",
                {"model": model})
        return value
