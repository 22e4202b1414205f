"""An experiment's results table: the final value of every metric of every run."""
from __future__ import annotations

import csv
import io
from typing import Any

from datetime import datetime

from django.db.models import OuterRef, Subquery
from django.utils import timezone
from rest_framework.renderers import BaseRenderer

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


#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: Any) -> Any:
    """A text cell that would start a formula, prefixed with ``'`` so it is shown as text.

    Numbers are written as they are: only client-chosen text (names, messages) can carry a
    formula, and a negative number must stay a number.
    """
    if isinstance(cell, str) and cell.startswith(FORMULA_TRIGGERS):
        return "'" + cell
    return cell


class ResultsCSVRenderer(BaseRenderer):
    """``?format=csv``: one row per run, one column per metric; text cells spreadsheet-safe."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> str:
        out = io.StringIO()
        writer = csv.writer(out)

        def write(cells: list) -> None:
            writer.writerow([spreadsheet_safe(cell) for cell in cells])

        if "metrics" not in data:  # an error answer: keep its message readable
            write(["error"])
            write([str(data.get("detail", data))])
            return out.getvalue()
        write(["run", "method", "state", *data["metrics"]])
        for row in data["runs"]:
            write([row["run"], row["method"], row["state"],
                   *(row["final"].get(name, "") for name in data["metrics"])])
        return out.getvalue()
