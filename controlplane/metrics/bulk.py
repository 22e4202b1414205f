"""Many rows in one INSERT, in the form each database takes fastest.

PostgreSQL gets the rows as one JSON document (``SELECT (row->>0)::varchar, ... FROM
json_array_elements(%s::json) row``): the statement's text is the same for every batch, so
psycopg parses it once and the server plans one parameter, not one per field (a 200-point
batch's ``VALUES`` of 1,200 placeholders cost the server several times the insert itself to
parse and plan; issue #20), and ``json.dumps`` encodes the rows in C where psycopg quoted one
array per column element by element (0.7 ms more of daphne's CPU per 200-point POST). Numbers
go through their shortest text form, which PostgreSQL's float8 and bigint inputs read back
exactly. Other databases (SQLite) get ``VALUES (%s, ...), ...`` in chunks that stay under
SQLite's 32,766 bound parameters.
"""
from __future__ import annotations

import json
from typing import Sequence

#: Most rows per VALUES statement (SQLite: 14 columns a row stays under its parameter bound).
VALUES_ROWS = 1000


def insert_rows(cursor, head: str, tail: str, types: Sequence[str], rows: Sequence[Sequence],
                constants: Sequence = ()) -> list[tuple]:
    """Run ``head <rows> tail`` (``head`` ends with ``INSERT INTO t (columns)``, ``tail`` holds
    any ``ON CONFLICT`` and ``RETURNING``) for all ``rows``, each preceded by ``constants``
    (e.g. the run's id, bound once on PostgreSQL); ``types`` are PostgreSQL's types of the
    columns, constants first; values must be JSON's (str, int, finite float) past the
    constants. Returns the rows the statements returned (none without
    RETURNING)."""
    returned: list[tuple] = []
    if not rows:
        return returned
    if cursor.db.vendor == "postgresql":
        scalars = [f"%s::{kind}" for kind in types[:len(constants)]]
        fields = [f"(row->>{index})::{kind}"
                  for index, kind in enumerate(types[len(constants):])]
        cursor.execute(f"{head} SELECT {', '.join([*scalars, *fields])} "
                       f"FROM json_array_elements(%s::json) row {tail}",
                       [*constants, json.dumps(rows)])
        return cursor.fetchall() if cursor.description else returned
    placeholders = "(" + ", ".join(["%s"] * len(types)) + ")"
    constants = list(constants)
    for start in range(0, len(rows), VALUES_ROWS):
        chunk = rows[start:start + VALUES_ROWS]
        cursor.execute(f"{head} VALUES {', '.join([placeholders] * len(chunk))} {tail}",
                       [field for row in chunk for field in (*constants, *row)])
        if cursor.description:
            returned.extend(cursor.fetchall())
    return returned
