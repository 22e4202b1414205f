"""Series downsampled to what a chart can show, keeping every extreme.

The rule (ours; the min/max decimation of time-series plotting, which keeps every peak that
LTTB may smooth away): a series of more than ``2 * buckets`` points is cut into ``buckets``
buckets of equal step width over the requested step range; from each bucket the point with the
smallest value and the point with the largest value are kept (the earliest step on ties), and the
series' first and last points always are. A series of at most ``2 * buckets`` points is returned
whole. The WebSocket's first message and ``GET /api/v1/runs/<id>/metrics/?buckets=N`` use this
one rule; the chart fetches full resolution for the range the user zooms into.

Where a bucket is at least two blocks wide (controlplane.metrics.blocks: the extremes of every
``BLOCK_STEPS`` steps, kept at ingestion), a series is downsampled from its blocks: each bucket's
extremes are those of the blocks wholly inside it and of the points of the (at most two) blocks
its edges cut, read from the points. That is the same result as from every point, from about
1/BLOCK_STEPS as many rows: a million points open in well under a second. Narrower buckets (a
series of fewer than 2 x BLOCK_STEPS x buckets steps) are downsampled in the database from the
points (SQLite: min()/max() with bare columns; PostgreSQL: window functions). The sizes of the
series come from the blocks too, unless a step range is asked for.
"""
from __future__ import annotations

import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterable

from django.db import connection, transaction

from controlplane.metrics.models import BLOCK_STEPS, MetricBlock, MetricPoint

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
    where = f"run_id IN ({', '.join(['%s'] * len(run_ids))})"
    params: list = [db_run_id(run_id) for run_id in run_ids]
    if name is not None:
        where, params = where + " AND name = %s", params + [name]
    with connection.cursor() as cursor:
        if from_step is None and to_step is None:  # whole series: their blocks know
            cursor.execute(f"SELECT run_id, name, SUM(count), MIN(first_step), MAX(last_step) "
                           f"FROM {MetricBlock._meta.db_table} WHERE {where} "
                           "GROUP BY run_id, name ORDER BY run_id, name", params)
        else:
            steps_sql, steps_params = _step_filter(from_step, to_step)
            cursor.execute(f"SELECT run_id, name, COUNT(*), MIN(step), MAX(step) FROM "
                           f"{MetricPoint._meta.db_table} WHERE {where}{steps_sql} "
                           "GROUP BY run_id, name ORDER BY run_id, name",
                           params + steps_params)
        return [Series(uuid.UUID(str(run_id)), name, int(count), first, last)
                for run_id, name, count, first, last in cursor.fetchall()]


def series_rows(series: Series, buckets: int, from_step: int | None = None,
                to_step: int | None = None) -> list[Row]:
    """The points of ``series`` in the step range, in step order, downsampled by the rule above
    when it has more than ``2 * buckets`` of them."""
    if series.is_large(buckets) and _width(series, buckets) >= 2 * BLOCK_STEPS:
        return _rows_from_blocks(series, buckets)
    table = MetricPoint._meta.db_table
    steps_sql, steps_params = _step_filter(from_step, to_step)
    where = f"run_id = %s AND name = %s{steps_sql}"
    params = [db_run_id(series.run_id), series.name, *steps_params]
    with connection.cursor() as cursor:
        if not series.is_large(buckets):
            cursor.execute(f"SELECT step, value, sim_time_s, wall_time_s FROM {table} "
                           f"WHERE {where} ORDER BY step", params)
        else:
            width = _width(series, buckets)
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


def _width(series: Series, buckets: int) -> int:
    """Steps per bucket: the fewest that cover the series' steps in at most ``buckets``."""
    return -(-(series.last_step - series.first_step + 1) // buckets)


def _rows_from_blocks(series: Series, buckets: int) -> list[Row]:
    """The rule's points of ``series`` (its steps first_step..last_step, within any range
    asked for) from its blocks: the extremes of the blocks wholly inside one bucket, and every
    point of the blocks that a bucket edge or an end of the range cuts (plus both ends)."""
    first, last, width = series.first_step, series.last_step, _width(series, buckets)
    cut = {boundary // BLOCK_STEPS for boundary in range(first + width, last + 1, width)
           if boundary % BLOCK_STEPS}
    cut.add(first // BLOCK_STEPS)  # the ends' blocks may hold points outside the range
    cut.add(last // BLOCK_STEPS)
    run_id = db_run_id(series.run_id)
    candidates: list[tuple[int, float, float, float]] = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT block, min_step, min_value, min_sim_time_s, min_wall_time_s, max_step, "
            f"max_value, max_sim_time_s, max_wall_time_s FROM {MetricBlock._meta.db_table} "
            "WHERE run_id = %s AND name = %s AND block > %s AND block < %s",
            [run_id, series.name, first // BLOCK_STEPS, last // BLOCK_STEPS])
        for block, *extremes in cursor.fetchall():
            if block not in cut:
                candidates.append(tuple(extremes[:4]))
                candidates.append(tuple(extremes[4:]))
        ranges = [(max(block * BLOCK_STEPS, first), min(block * BLOCK_STEPS + BLOCK_STEPS - 1,
                                                        last)) for block in sorted(cut)]
        candidates.extend(_points_in(cursor, run_id, series.name, ranges))
    lowest: dict[int, tuple] = {}
    highest: dict[int, tuple] = {}
    ends: list[tuple] = []
    for point in candidates:
        step, value = point[0], point[1]
        if step == first or step == last:
            ends.append(point)
        bucket = (step - first) // width
        low = lowest.get(bucket)
        if low is None or value < low[1] or (value == low[1] and step < low[0]):
            lowest[bucket] = point
        high = highest.get(bucket)
        if high is None or value > high[1] or (value == high[1] and step < high[0]):
            highest[bucket] = point
    kept = {point[0]: point for point in (*lowest.values(), *highest.values(), *ends)}
    return [(series.name, *kept[step]) for step in sorted(kept)]


def _points_in(cursor, run_id: object, name: str,
               ranges: list[tuple[int, int]]) -> list[tuple[int, float, float, float]]:
    """(step, value, sim_time_s, wall_time_s) of the series' points in these step ranges: a
    nested loop over the ranges, one index range scan each. (PostgreSQL plans it so once it
    has statistics of the table: autovacuum keeps them, blocks.rebuild refreshes them after a
    bulk load; without them it filtered every point of the series for each range.)"""
    edges = ", ".join(["(CAST(%s AS BIGINT), CAST(%s AS BIGINT))"] * len(ranges))
    postgresql = connection.vendor == "postgresql"
    # (Not on SQLite: its transactions begin IMMEDIATE, taking the write lock.)
    with transaction.atomic() if postgresql else nullcontext():
        if postgresql:
            # The join's row estimate is far too high (ranges are short), which made PostgreSQL
            # JIT-compile a 20 ms query for 150 ms.
            cursor.execute("SET LOCAL jit = off")
        cursor.execute(
            f"WITH edges (low, high) AS (VALUES {edges}) SELECT step, value, sim_time_s, "
            f"wall_time_s FROM edges JOIN {MetricPoint._meta.db_table} AS point ON "
            "point.run_id = %s AND point.name = %s AND point.step BETWEEN edges.low AND "
            "edges.high", [bound for pair in ranges for bound in pair] + [run_id, name])
        return cursor.fetchall()


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
