"""The catalogue of methods: one entry per method name, with its paper, config and baselines.

Algorithm modules call :func:`register` at import; :func:`load_all` imports them all. The control
plane serves this catalogue at ``GET /api/v1/algorithms/`` and validates experiment configs with
:meth:`Method.parse_config`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ml import metrics_catalogue
from ml.config import MethodConfig, parse_config
from ml.reporting import Reporter

#: Modules that register methods; each is imported by :func:`load_all`.
ALGORITHM_MODULES: list[str] = [
    "ml.algorithms.federated_learning",
    "ml.algorithms.split_learning",
    "ml.algorithms.cross_region",
    "ml.algorithms.neural_architecture_search",
    "ml.algorithms.llm_compression",
    "ml.algorithms.device_cloud_inference",
    "ml.algorithms.federated_fine_tuning",
]

RunFn = Callable[[Any, Reporter], dict]


@dataclass(frozen=True)
class Method:
    """A runnable method of the catalogue.

    ``run(config, reporter)`` trains or serves for real, reports metric points and returns a
    JSON-able summary (``{"final": {metric: value, ...}, ...}``).
    """

    name: str
    paper: str
    summary: str
    config: type[MethodConfig]
    run: RunFn
    baselines: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    family: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: The role program (ml.distributed.runtime.RoleProgram) of a method that also runs
    #: distributed, one rank per device; None for emulated-only methods.
    program: Any = None

    @property
    def distributed(self) -> bool:
        return self.program is not None

    def defaults(self) -> dict[str, Any]:
        return self.config().model_dump(mode="json")

    def json_schema(self) -> dict[str, Any]:
        return self.config.model_json_schema()

    def parse_config(self, values: dict[str, Any] | None) -> MethodConfig:
        return parse_config(self.config, values)

    def describe(self) -> dict[str, Any]:
        """The catalogue entry as JSON (what the API serves)."""
        return {
            "name": self.name,
            "family": self.family,
            "paper": self.paper,
            "summary": self.summary,
            "baselines": list(self.baselines),
            "distributed": self.distributed,
            # Without roles, a distributed run executes whole on one chosen device.
            "single_device": not self.distributed,
            "metrics": list(self.metrics),
            # How the dashboard titles and formats each (ml/metrics_catalogue.py).
            "metric_info": {name: metrics_catalogue.describe(name).as_dict()
                            for name in self.metrics},
            "defaults": self.defaults(),
            "schema": self.json_schema(),
        }


class UnknownMethod(KeyError):
    """No method of that name is registered."""


_METHODS: dict[str, Method] = {}
_loaded = False


def register(method: Method) -> Method:
    if method.name in _METHODS and _METHODS[method.name] is not method:
        raise ValueError(f"method {method.name!r} registered twice")
    _METHODS[method.name] = method
    return method


def load_all() -> None:
    """Import every algorithm module so that all methods are registered."""
    global _loaded
    if not _loaded:
        for module in ALGORITHM_MODULES:
            importlib.import_module(module)
        _loaded = True


def get(name: str) -> Method:
    """The method ``name``. Imports the algorithm modules in order only until it is registered
    (a run of fedavg need not import the LLM and NAS families: ~0.5 s of start-up)."""
    if name not in _METHODS:
        for module in ALGORITHM_MODULES:
            importlib.import_module(module)
            if name in _METHODS:
                break
        else:
            load_all()
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethod(name) from None


def all_methods() -> list[Method]:
    load_all()
    return sorted(_METHODS.values(), key=lambda m: m.name)
