"""Final-value tables across experiments, built on the API's own results (one computation)."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from controlplane.experiments.models import Experiment
from controlplane.experiments.results import final_values
from ml.metrics_catalogue import describe


@dataclass(frozen=True)
class RunRow:
    """One run with the final value of each metric (its value at the highest step)."""

    id: uuid.UUID
    experiment_id: uuid.UUID
    experiment_name: str
    algorithm: str
    method: str
    state: str
    final: dict[str, float]

    def values(self, metrics: list[str]) -> list[float | None]:
        return [self.final.get(name) for name in metrics]


def run_rows(experiments: Iterable[Experiment]) -> list[RunRow]:
    """A row per run of ``experiments`` (already scoped to the user), in their order."""
    rows: list[RunRow] = []
    for experiment in experiments:
        results = final_values(experiment)
        for run in results["runs"]:
            rows.append(RunRow(id=run["run"], experiment_id=experiment.id,
                               experiment_name=experiment.name, algorithm=experiment.algorithm,
                               method=run["method"], state=run["state"], final=run["final"]))
    return rows


def metric_names(rows: Iterable[RunRow], *, per_entity: bool) -> list[str]:
    """Metric names found in ``rows``; ``per_entity=False`` leaves out "name/entity" series,
    which are too many for a table on screen (exports keep them)."""
    names = {name for row in rows for name in row.final}
    if not per_entity:
        names = {name for name in names if "/" not in name}
    return sorted(names)


def as_table(rows: list[RunRow], metrics: list[str]) -> list[dict[str, Any]]:
    """Rows as the templates show them: identity columns and one value per metric."""
    return [{"id": row.id, "experiment_id": row.experiment_id,
             "experiment_name": row.experiment_name, "method": row.method, "state": row.state,
             "values": row.values(metrics)} for row in rows]


def metric_labels(metrics: list[str]) -> list[dict[str, str]]:
    """Column headers for ``metrics``: the catalogue's label, unit and description."""
    return [{"name": name, **describe(name).as_dict()} for name in metrics]


def config_value(value: Any) -> str:
    """A config value as a cell: scalars as they are, a testbed list as its profiles, other
    lists and objects as compact JSON."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        names = [str(v.get("name") or v.get("profile") or "?") for v in value]
        shown = ", ".join(names[:6]) + (f", … ({len(names)} in all)" if len(names) > 6 else "")
        return f"{len(value)} devices: {shown}"
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def config_rows(config: dict[str, Any]) -> list[tuple[str, str]]:
    """A config as (key, readable value) rows, keys sorted."""
    return [(key, config_value(config[key])) for key in sorted(config)]


@dataclass(frozen=True)
class ConfigDifference:
    """Runs' configs side by side: the keys whose values differ (a row of values per key,
    "—" where a run has no such key), and the keys all runs share with one value."""

    labels: list[str]
    differing: list[tuple[str, list[str]]]
    same: list[tuple[str, str]]


def config_difference(labels: list[str], configs: list[dict[str, Any]]) -> ConfigDifference:
    keys = sorted({key for config in configs for key in config})
    differing, same = [], []
    for key in keys:
        cells = [config_value(config[key]) if key in config else "—" for config in configs]
        if all(key in config for config in configs) and len(
                {json.dumps(config[key], sort_keys=True) for config in configs}) == 1:
            same.append((key, cells[0]))
        else:
            differing.append((key, cells))
    return ConfigDifference(labels, differing, same)
