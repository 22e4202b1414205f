"""The catalogue of methods: one entry per method name, with its paper, config and baselines.

Algorithm modules call :func:`register` at import; :func:`load_all` imports them all (the listing),
:func:`get` only the one module that registers the method asked for (:data:`METHOD_MODULES`), so
running one method never imports another family. The control plane serves this catalogue at
``GET /api/v1/algorithms/`` and validates experiment configs with :meth:`Method.parse_config`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ml import metrics_catalogue
from ml.config import MethodConfig, parse_config
from ml.reporting import Reporter

#: Each algorithm module (one family) and the methods it registers when imported. A test imports
#: every module alone in a fresh interpreter and checks it registers exactly these names.
METHOD_MODULES: dict[str, tuple[str, ...]] = {
    "ml.algorithms.federated_learning": ("fedavg",),
    "ml.algorithms.split_learning": ("splitfed", "adasfl", "mergesfl", "parallelsfl"),
    "ml.algorithms.cross_region": ("diloco", "streaming-diloco", "cocodc"),
    "ml.algorithms.neural_architecture_search": (
        "imb-nas", "imb-nas-full-search", "imb-nas-finetune-ce", "imb-nas-finetune-rw"),
    "ml.algorithms.llm_compression": (
        "comp", "llm-pruner", "llm-pruner-lora", "wanda-channel", "layer-prune"),
    "ml.algorithms.device_cloud_inference": (
        "cloud-only-inference", "u-shaped-inference", "device-cloud-sd", "hat"),
    "ml.algorithms.federated_fine_tuning": ("fedlora", "hetlora", "prune-then-finetune",
                                            "fedspine"),
}

#: Modules that register methods; each is imported by :func:`load_all`.
ALGORITHM_MODULES: list[str] = list(METHOD_MODULES)

#: The module that registers each method.
_MODULE_OF: dict[str, str] = {name: module for module, names in METHOD_MODULES.items()
                              for name in names}

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
    """The method ``name``. Imports only the module that registers it (:data:`METHOD_MODULES`):
    a run of fedavg imports neither the LLM nor the NAS family (~0.5 s of start-up); a name
    the index does not know loads the whole catalogue before it is refused."""
    if name not in _METHODS:
        module = _MODULE_OF.get(name)
        if module is not None:
            importlib.import_module(module)
        if name not in _METHODS:
            load_all()
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethod(name) from None


def all_methods() -> list[Method]:
    load_all()
    return sorted(_METHODS.values(), key=lambda m: m.name)
