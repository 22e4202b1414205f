"""Per-step exports: every point of a run or of an experiment, as JSON or CSV.

One row per point (``run, method, name, step, value, sim_time_s, wall_time_s``), ordered by run
position, name and step, so a spreadsheet or pandas reads it as a long table. The JSON form is
``{"experiment"?, "points": [{...}]}`` with the same keys.
"""
from __future__ import annotations

from typing import Any, Iterable

from django.db.models import F, QuerySet

from controlplane.csv_tables import TableCSVRenderer
from controlplane.metrics.models import MetricPoint

#: The columns of a per-step export, in order.
COLUMNS = ("run", "method", "name", "step", "value", "sim_time_s", "wall_time_s")


def step_rows(points: QuerySet[MetricPoint]) -> list[dict[str, Any]]:
    """The points as export rows, by run position, metric name and step."""
    rows = (points.order_by("run__experiment_id", "run__position", "name", "step")
            .annotate(method=F("run__method"))
            .values("run_id", "method", "name", "step", "value", "sim_time_s", "wall_time_s"))
    return [{"run": str(row.pop("run_id")), **row} for row in rows]


class StepsCSVRenderer(TableCSVRenderer):
    """``?format=csv``: the rows of a per-step export."""

    table_key = "points"

    def rows(self, data: dict) -> Iterable[list]:
        yield list(COLUMNS)
        for row in data["points"]:
            yield [row.get(column, "") for column in COLUMNS]
