"""An experiment's results table: the final value of every metric of every run."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from controlplane.csv_tables import TableCSVRenderer
from controlplane.experiments.models import Experiment
from controlplane.metrics.models import MetricPoint
from ml.metrics_catalogue import MAIN_METRICS


def final_values(experiment: Experiment) -> dict[str, Any]:
    """``{"experiment", "name", "algorithm", "metrics": [...], "runs": [{"run", "method",
    "state", "final": {metric: value}}]}``; a metric's final value is the one at its highest
    step."""
    highest_step = (MetricPoint.objects.filter(run=OuterRef("run"), name=OuterRef("name"))
                    .order_by("-step").values("step")[:1])
    finals = (MetricPoint.objects.filter(run__experiment=experiment)
              .filter(step=Subquery(highest_step)).values_list("run_id", "name", "value"))
    by_run: dict[Any, dict[str, float]] = {}
    for run_id, name, value in finals:
        by_run.setdefault(run_id, {})[name] = value
    runs = list(experiment.runs.order_by("position"))
    return {
        "experiment": experiment.id,
        "name": experiment.name,
        "algorithm": experiment.algorithm,
        "metrics": sorted({name for values in by_run.values() for name in values}),
        "runs": [{"run": run.id, "method": run.method, "state": run.state,
                  "final": dict(sorted(by_run.get(run.id, {}).items()))} for run in runs],
    }


def main_metrics(experiment_ids: list) -> dict[Any, tuple[str, float]]:
    """For each experiment, its method's (position 0) main metric and final value: the first
    of ``ml.metrics_catalogue.MAIN_METRICS`` it reported. One query for all experiments."""
    highest_step = (MetricPoint.objects.filter(run=OuterRef("run"), name=OuterRef("name"))
                    .order_by("-step").values("step")[:1])
    finals = (MetricPoint.objects.filter(run__experiment_id__in=experiment_ids, run__position=0,
                                         name__in=MAIN_METRICS)
              .filter(step=Subquery(highest_step))
              .values_list("run__experiment_id", "name", "value"))
    found: dict[Any, dict[str, float]] = {}
    for experiment_id, name, value in finals:
        found.setdefault(experiment_id, {})[name] = value
    return {experiment_id: next((name, values[name]) for name in MAIN_METRICS if name in values)
            for experiment_id, values in found.items()}


def duration_s(experiment: Experiment, now: datetime | None = None) -> float:
    """Seconds from its creation to its end (to now while it runs)."""
    end = experiment.finished_at or now or timezone.now()
    return max(0.0, (end - experiment.created).total_seconds())


class ResultsCSVRenderer(TableCSVRenderer):
    """``?format=csv``: one row per run, one column per metric."""

    table_key = "metrics"

    def rows(self, data: dict):
        yield ["run", "method", "state", *data["metrics"]]
        for row in data["runs"]:
            yield [row["run"], row["method"], row["state"],
                   *(row["final"].get(name, "") for name in data["metrics"])]
