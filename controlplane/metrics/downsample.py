"""Series downsampled to what a chart can show, keeping every extreme.

The rule (ours; the min/max decimation of time-series plotting, which keeps every peak that
LTTB may smooth away): a series of more than ``2 * buckets`` points is cut into ``buckets``
buckets of equal step width over the requested step range; from each bucket the point with the
smallest value and the point with the largest value are kept (the earliest step on ties), and the
series' first and last points always are. A series of at most ``2 * buckets`` points is returned
whole. The WebSocket's first message and ``GET /api/v1/runs/<id>/metrics/?buckets=N`` use this
one rule; the chart fetches full resolution for the range the user zooms into.

The work happens in the database (SQLite: min()/max() with bare columns; PostgreSQL: window
functions), so a run of a million points costs a scan or two per large series, not a million
Python rows.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterable

from django.db import connection

from controlplane.metrics.models import MetricPoint

#: Buckets per series in the WebSocket's history: about a chart's width in pixels.
HISTORY_BUCKETS = 1000
#: Most buckets a client may ask for.
MAX_BUCKETS = 10_000
#: ``buckets`` that keeps every point (full resolution).
UNLIMITED = 2**62

#: A point as the WebSocket and the chart carry it: name, step, value, sim_time_s, wall_time_s.
Row = tuple[str, int, float, float, float]


@dataclass(frozen=True)
class Series:
    """One series of a run, with its size over the requested step range."""

    run_id: object
    name: str
    count: int
    first_step: int
    last_step: int

    def is_large(self, buckets: int) -> bool:
        return self.count > 2 * buckets


def db_run_id(run_id) -> object:
    """A run id as raw SQL binds it (SQLite stores UUIDs as 32 hex digits, PostgreSQL as uuid)."""
    return MetricPoint._meta.get_field("run").get_db_prep_value(run_id, connection)


def _step_filter(from_step: int | None, to_step: int | None) -> tuple[str, list[int]]:
    sql, params = "", []
    if from_step is not None:
        sql, params = sql + " AND step >= %s", params + [from_step]
    if to_step is not None:
        sql, params = sql + " AND step <= %s", params + [to_step]
    return sql, params


def series_of(run_ids: Iterable, name: str | None = None, from_step: int | None = None,
              to_step: int | None = None) -> list[Series]:
    """The series of these runs (or just ``name``) within the step range, with their sizes."""
    run_ids = list(run_ids)
    if not run_ids:
        return []
    table = MetricPoint._meta.db_table
    where = f"run_id IN ({', '.join(['%s'] * len(run_ids))})"
    params: list = [db_run_id(run_id) for run_id in run_ids]
    if name is not None:
        where, params = where + " AND name = %s", params + [name]
    steps_sql, steps_params = _step_filter(from_step, to_step)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT run_id, name, COUNT(*), MIN(step), MAX(step) FROM {table} "
                       f"WHERE {where}{steps_sql} GROUP BY run_id, name ORDER BY run_id, name",
                       params + steps_params)
        return [Series(uuid.UUID(str(run_id)), *rest) for run_id, *rest in cursor.fetchall()]


def series_rows(series: Series, buckets: int, from_step: int | None = None,
                to_step: int | None = None) -> list[Row]:
    """The points of ``series`` in the step range, in step order, downsampled by the rule above
    when it has more than ``2 * buckets`` of them."""
    table = MetricPoint._meta.db_table
    steps_sql, steps_params = _step_filter(from_step, to_step)
    where = f"run_id = %s AND name = %s{steps_sql}"
    params = [db_run_id(series.run_id), series.name, *steps_params]
    with connection.cursor() as cursor:
        if not series.is_large(buckets):
            cursor.execute(f"SELECT step, value, sim_time_s, wall_time_s FROM {table} "
                           f"WHERE {where} ORDER BY step", params)
        else:
            span = series.last_step - series.first_step + 1
            width = -(-span // buckets)  # ceil: at most `buckets` buckets
            bucket = f"(step - {int(series.first_step)}) / {int(width)}"
            ends = [series.first_step, series.last_step]
            if connection.vendor == "sqlite":
                # SQLite's bare columns: with one min() or max() aggregate, the other columns
                # come from that row. One ordered pass per extreme, no sort (5x the window
                # functions' speed on a million points).
                cursor.execute(
                    " UNION ".join(
                        f"SELECT step, {agg}(value), sim_time_s, wall_time_s FROM {table} "
                        f"WHERE {where} GROUP BY {bucket}" for agg in ("MIN", "MAX"))
                    + f" UNION SELECT step, value, sim_time_s, wall_time_s FROM {table} "
                    f"WHERE run_id = %s AND name = %s AND step IN (%s, %s) ORDER BY step",
                    params + params + params[:2] + ends)
            else:
                cursor.execute(
                    "SELECT step, value, sim_time_s, wall_time_s FROM ("
                    "SELECT step, value, sim_time_s, wall_time_s, "
                    f"ROW_NUMBER() OVER (PARTITION BY {bucket} ORDER BY value, step) AS low, "
                    f"ROW_NUMBER() OVER (PARTITION BY {bucket} ORDER BY value DESC, step) "
                    f"AS high FROM {table} WHERE {where}) AS ranked "
                    "WHERE low = 1 OR high = 1 OR step = %s OR step = %s ORDER BY step",
                    params + ends)
        return [(series.name, *row) for row in cursor.fetchall()]


def points_by_run(run_ids: Iterable, buckets: int, name: str | None = None,
                  from_step: int | None = None,
                  to_step: int | None = None) -> tuple[dict[str, list[Row]], dict[str, list[str]]]:
    """``({run_id: rows ordered by name and step}, {run_id: names of downsampled series})``."""
    points: dict[str, list[Row]] = {}
    downsampled: dict[str, list[str]] = {}
    for series in series_of(run_ids, name, from_step, to_step):
        key = str(series.run_id)
        points.setdefault(key, []).extend(series_rows(series, buckets, from_step, to_step))
        if series.is_large(buckets):
            downsampled.setdefault(key, []).append(series.name)
    return points, downsampled
