"""A few long-lived threads whose Django database connections persist across requests.

Under ASGI each request runs in a thread of its own context, so its database connection is
opened for it and closed with its response (controlplane.asgi_http): on PostgreSQL a new backend
per request (about 10 ms, most of a metric POST's time in issue #20's profile), on SQLite a new
file handle and its PRAGMAs. Agents' reports are the hot path, so they run on a lane instead
(``reports``), as do the owners' reads of experiment and run lists and details (``reads``: the
dashboard polls them; a lane of their own, so a burst of reads never queues agents' reports).
Each lane's thread keeps its own connections as Django does with ``CONN_MAX_AGE`` under WSGI,
checked before and after every call (``close_if_unusable_or_obsolete``: an error left behind or
an unfinished transaction closes it, as does age), health-checked before its first query of a
call (``CONN_HEALTH_CHECKS``: a backend killed while idle is replaced, not turned into a 500),
and its DEBUG query log cleared at each call's start.

The persistence is confined to the lane's own connection objects: the global settings keep
``CONN_MAX_AGE = 0``, so request threads, Channels' ``database_sync_to_async`` (which closes
connections outside the context that opened them) and Celery behave as before, and a process
holds at most ``INGEST_THREADS + READ_THREADS`` persistent connections per database.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

from django.conf import settings
from django.db import connections, reset_queries

T = TypeVar("T")


#: PostgreSQL's application_name of the lane's connections (unless OPTIONS names one), so an
#: operator can tell them apart in pg_stat_activity.
APPLICATION_NAME = "estuary-db-lane"


def _persistent_settings(max_age_s: int) -> None:
    """Make this thread's connection objects persistent (a copy of their settings: the shared
    dict, read by every other thread's connections, is left alone)."""
    for alias in connections:
        connection = connections[alias]
        if connection.settings_dict.get("CONN_MAX_AGE") == max_age_s:
            continue  # done before, in this thread
        connection.close()  # opened with the shared settings, if at all
        persistent = {**connection.settings_dict, "CONN_MAX_AGE": max_age_s,
                      "CONN_HEALTH_CHECKS": True}
        if connection.vendor == "postgresql":
            persistent["OPTIONS"] = {"application_name": APPLICATION_NAME,
                                     **persistent.get("OPTIONS", {})}
        connection.settings_dict = persistent


def _close_unusable_or_obsolete() -> None:
    """What Django does at each request's start and end (``close_old_connections``), for this
    thread's connections only."""
    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()


class DatabaseLane:
    """Runs calls on at most ``threads`` long-lived threads, each with persistent connections
    (see the module's docstring)."""

    def __init__(self, threads: int, max_age_s: int, name: str = "db-lane") -> None:
        self.max_age_s = max_age_s
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    def submit(self, function: Callable[..., T], *args) -> Future[T]:
        """``function(*args)`` on one of the lane's threads."""
        return self._executor.submit(self._call, function, *args)

    async def run(self, function: Callable[..., T], *args) -> T:
        """``function(*args)`` on one of the lane's threads, awaited. Not through
        ``sync_to_async``: that would run it in a copy of the caller's context, whose connection
        objects are the caller's, not the thread's own."""
        return await asyncio.wrap_future(self.submit(function, *args))

    def _call(self, function: Callable[..., T], *args) -> T:
        _persistent_settings(self.max_age_s)
        _close_unusable_or_obsolete()
        # As at each request's start (request_started runs in the request's context, not
        # here): with DEBUG on, a connection that lives on would otherwise keep the last 9,000
        # statements, each with a whole batch in it.
        reset_queries()
        try:
            return function(*args)
        finally:
            _close_unusable_or_obsolete()


#: The lanes by name, and the setting that sizes each.
LANE_THREADS = {"reports": "INGEST_THREADS", "reads": "READ_THREADS"}

_lane_lock = threading.Lock()
_lanes: dict[str, DatabaseLane] = {}


def lane(name: str = "reports") -> DatabaseLane:
    """This process's lane ``name`` (:data:`LANE_THREADS`), sized by its setting; connections
    live ``settings.ESTUARY["INGEST_CONN_MAX_AGE_S"]`` seconds on every lane."""
    with _lane_lock:
        if name not in _lanes:
            _lanes[name] = DatabaseLane(settings.ESTUARY[LANE_THREADS[name]],
                                        settings.ESTUARY["INGEST_CONN_MAX_AGE_S"],
                                        name=f"db-lane-{name}")
        return _lanes[name]
