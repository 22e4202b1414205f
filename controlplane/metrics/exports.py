"""Per-step exports: every point of a run or of an experiment, as JSON or CSV.

One row per point (``run, method, name, step, value, sim_time_s, wall_time_s``), ordered by run
position, name and step, so a spreadsheet or pandas reads it as a long table. The JSON form is
``{"experiment"?, "points": [{...}]}`` with the same keys.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Iterable

from django.db.models import F, QuerySet
from rest_framework.renderers import BaseRenderer

from controlplane.experiments.results import spreadsheet_safe
from controlplane.metrics.models import MetricPoint

#: The columns of a per-step export, in order.
COLUMNS = ("run", "method", "name", "step", "value", "sim_time_s", "wall_time_s")


def step_rows(points: QuerySet[MetricPoint]) -> list[dict[str, Any]]:
    """The points as export rows, by run position, metric name and step."""
    rows = (points.order_by("run__experiment_id", "run__position", "name", "step")
            .annotate(method=F("run__method"))
            .values("run_id", "method", "name", "step", "value", "sim_time_s", "wall_time_s"))
    return [{"run": str(row.pop("run_id")), **row} for row in rows]


class StepsCSVRenderer(BaseRenderer):
    """``?format=csv``: the rows of a per-step export (an error answer stays readable)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        if not isinstance(data, dict) or "points" not in data:
            writer.writerow(["error"])
            writer.writerow([str(data.get("detail", data)) if isinstance(data, dict) else data])
            return out.getvalue()
        writer.writerow(COLUMNS)
        rows: Iterable[dict[str, Any]] = data["points"]
        for row in rows:
            writer.writerow([spreadsheet_safe(row.get(column, "")) for column in COLUMNS])
        return out.getvalue()
