"""Final-value tables across experiments, built on the API's own results (one computation)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from controlplane.experiments.models import Experiment
from controlplane.experiments.results import final_values


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
