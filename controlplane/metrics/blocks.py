"""Per-block extremes of each series (MetricBlock), kept at ingestion.

A block is ``BLOCK_STEPS`` consecutive steps of one series. For each, the table holds the number
of stored points, the first and last step, and the point of smallest and of largest value (the
earliest step on ties), which is all the downsampling rule needs of a bucket made of whole
blocks. Ingestion upserts the blocks of the points it newly stored, in the same transaction, so
the table always describes exactly the stored points.
"""
from __future__ import annotations

from typing import Iterable

from django.db import connection as default_connection
from django.db import transaction

from controlplane.metrics import bulk
from controlplane.metrics.models import BLOCK_STEPS, MetricBlock, MetricPoint

#: Columns of MetricBlock after run_id, name and block, in this order everywhere here.
STAT_COLUMNS = ("count", "first_step", "last_step",
                "min_step", "min_value", "min_sim_time_s", "min_wall_time_s",
                "max_step", "max_value", "max_sim_time_s", "max_wall_time_s")
#: PostgreSQL's types of run_id, name, block and STAT_COLUMNS.
COLUMN_TYPES = ("uuid", "varchar", "bigint", "integer", "bigint", "bigint",
                "bigint", "float8", "float8", "float8", "bigint", "float8", "float8", "float8")


def aggregate(points: Iterable[tuple[str, int, float, float, float]]) -> dict[tuple[str, int], list]:
    """``{(name, block): [count, first, last, min step, value, sim, wall, max step, value, sim,
    wall]}`` of (name, step, value, sim_time_s, wall_time_s) points, each counted once."""
    blocks: dict[tuple[str, int], list] = {}
    for name, step, value, sim, wall in points:
        key = (name, step // BLOCK_STEPS)
        stats = blocks.get(key)
        if stats is None:
            blocks[key] = [1, step, step, step, value, sim, wall, step, value, sim, wall]
            continue
        stats[0] += 1
        if step < stats[1]:
            stats[1] = step
        if step > stats[2]:
            stats[2] = step
        if value < stats[4] or (value == stats[4] and step < stats[3]):
            stats[3:7] = step, value, sim, wall
        if value > stats[8] or (value == stats[8] and step < stats[7]):
            stats[7:11] = step, value, sim, wall
    return blocks


def _upsert_sql() -> tuple[str, str]:
    """The head and tail of the upsert (controlplane.metrics.bulk puts the rows between)."""
    table = MetricBlock._meta.db_table
    columns = ("run_id", "name", "block", *STAT_COLUMNS)

    def pick(prefix: str, better: str) -> list[str]:  # the new extreme wins, earliest on ties
        wins = (f"excluded.{prefix}_value {better} {table}.{prefix}_value OR "
                f"(excluded.{prefix}_value = {table}.{prefix}_value AND "
                f"excluded.{prefix}_step < {table}.{prefix}_step)")
        return [f"{prefix}_{column} = CASE WHEN {wins} THEN excluded.{prefix}_{column} "
                f"ELSE {table}.{prefix}_{column} END"
                for column in ("step", "value", "sim_time_s", "wall_time_s")]

    updates = [f"count = {table}.count + excluded.count",
               f"first_step = CASE WHEN excluded.first_step < {table}.first_step "
               f"THEN excluded.first_step ELSE {table}.first_step END",
               f"last_step = CASE WHEN excluded.last_step > {table}.last_step "
               f"THEN excluded.last_step ELSE {table}.last_step END",
               *pick("min", "<"), *pick("max", ">")]
    return (f"INSERT INTO {table} ({', '.join(columns)})",
            f"ON CONFLICT (run_id, name, block) DO UPDATE SET {', '.join(updates)}")


_UPSERT = _upsert_sql()


def postgres_fold_sql(source: str, run_id_sql: str = "%s::uuid") -> str:
    """PostgreSQL: an upsert that folds the rows of ``source`` (a CTE or table with the columns
    name, step, value, sim_time_s, wall_time_s, each point once) into their blocks, by
    :func:`aggregate`'s rule in SQL, so ingestion stores points and blocks in one statement
    (controlplane.metrics.actions). Blocks are upserted in (name, block) order: two
    transactions folding into the same blocks lock them in the same order, never a deadlock."""
    def extreme(order: str) -> list[str]:  # the point of the extreme value, earliest on ties
        return [f"(array_agg({column} ORDER BY value {order}, step))[1]"
                for column in ("step", "value", "sim_time_s", "wall_time_s")]

    head, tail = _UPSERT
    stats = ["count(*)", "min(step)", "max(step)", *extreme("ASC"), *extreme("DESC")]
    return (f"{head} SELECT {run_id_sql}, name, step / {BLOCK_STEPS}, {', '.join(stats)} "
            f"FROM {source} GROUP BY name, step / {BLOCK_STEPS} "
            f"ORDER BY name, step / {BLOCK_STEPS} {tail}")


def add_points(db_run_id: object, points: Iterable[tuple[str, int, float, float, float]],
               connection=default_connection) -> None:
    """Fold newly stored points (never one already counted) into their blocks."""
    rows = [(name, block, *stats) for (name, block), stats in aggregate(points).items()]
    head, tail = _UPSERT
    with connection.cursor() as cursor:
        bulk.insert_rows(cursor, head, tail, COLUMN_TYPES, rows, constants=(db_run_id,))


def rebuild(run_ids: Iterable | None = None, connection=default_connection,
            chunk_points: int = 100_000) -> None:
    """Recompute the blocks of these runs (all runs: None) from their stored points: for points
    stored other than by ingestion (a migration, a bulk load), while nothing ingests into them."""
    points_table, blocks_table = MetricPoint._meta.db_table, MetricBlock._meta.db_table
    run_field = MetricPoint._meta.get_field("run")
    with connection.cursor() as cursor:
        if run_ids is None:
            cursor.execute(f"SELECT DISTINCT run_id FROM {points_table}")
            run_ids = [row[0] for row in cursor.fetchall()]
        else:
            run_ids = [run_field.get_db_prep_value(run_id, connection) for run_id in run_ids]
    for run_id in run_ids:
        # One transaction per run, write lock first (SQLite: a read snapshot cannot become a
        # write once another process has written).
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {blocks_table} WHERE run_id = %s", [run_id])
            cursor.execute(f"SELECT name, step, value, sim_time_s, wall_time_s FROM "
                           f"{points_table} WHERE run_id = %s ORDER BY name, step", [run_id])
            while rows := cursor.fetchmany(chunk_points):
                add_points(run_id, rows, connection)
    if connection.vendor == "postgresql":  # a bulk load leaves the planner's statistics stale
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {points_table}, {blocks_table}")

