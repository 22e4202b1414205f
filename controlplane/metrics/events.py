"""Publishing to an experiment's Channels group, always after the transaction commits.

Every message is ``{"type": "experiment.event", "text": <what the browser receives, as JSON
text>}``: encoded once here, not once per socket, so the consumers forward it as is (formats in
docs/architecture.md).

Publishing is best-effort: the data is already committed, so a broker failure must never turn
the request into a 5xx. Failures are counted (:func:`publish_failures`, per process) and logged
with that running count: the first of an outage and every 100th as a warning, the end of the
outage as info. After a
slow failure (a broker that does not answer: the connect timeout), publishing pauses for
:data:`PAUSE_AFTER_SLOW_FAILURE_S` (events are dropped and counted), so such a broker costs one
timeout per pause, not one per request. A refused connection fails at once and pauses nothing.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from rest_framework.utils.encoders import JSONEncoder

Event = dict[str, Any]

log = logging.getLogger(__name__)

#: A publish waits at most this long (a hung broker holds a socket read for much longer).
PUBLISH_TIMEOUT_S = 3.0
#: A failure that took longer than this pauses publishing for PAUSE_AFTER_SLOW_FAILURE_S.
SLOW_FAILURE_S = 0.5
PAUSE_AFTER_SLOW_FAILURE_S = 5.0

_lock = threading.Lock()
_failures = 0  # events not published since this process started
_failing_since = -1  # _failures when the current outage began (-1: publishing works)
_paused_until = 0.0


def plain_json(data: Any) -> Any:
    """``data`` (e.g. serializer output with UUIDs and datetimes) as plain JSON types, which
    the channel layer (msgpack) and the WebSocket (json) can carry."""
    return json.loads(json.dumps(data, cls=JSONEncoder))


def group_name(experiment_id: uuid.UUID | str) -> str:
    """The Channels group of one experiment: ``experiment.<uuid hex>``."""
    return f"experiment.{uuid.UUID(str(experiment_id)).hex}"


def point_row(point: dict[str, Any]) -> list:
    """A point as the compact row the WebSocket carries."""
    return [point["name"], point["step"], point["value"], point["sim_time_s"],
            point["wall_time_s"]]


def points_event(run_id: uuid.UUID, points: Iterable[dict[str, Any]]) -> Event:
    return {"type": "points", "run": str(run_id), "points": [point_row(p) for p in points]}


def log_event(run_id: uuid.UUID, lines: list[str]) -> Event:
    return {"type": "log", "run": str(run_id), "lines": lines}


def publish_on_commit(experiment_id: uuid.UUID, event: Event | Callable[[], Event]) -> None:
    """Send ``event`` (or what the callable builds at commit time) once the transaction commits.

    A broker failure is logged and counted, never raised: the data is stored, only the live
    view misses it.
    """

    def publish() -> None:
        publish_now(experiment_id, event)

    transaction.on_commit(publish)


def publish_now(experiment_id: uuid.UUID, event: Event | Callable[[], Event]) -> bool:
    """Send ``event`` to the experiment's group now; False (counted, logged) if it was not."""
    if time.monotonic() < _paused_until:
        _count_failure(experiment_id, "publishing paused after a slow broker failure")
        return False
    started = time.monotonic()
    try:
        if callable(event):
            event = event()
        async_to_sync(_group_send)(
            group_name(experiment_id), {"type": "experiment.event", "text": json.dumps(event, cls=JSONEncoder)})
    except Exception as exc:  # noqa: BLE001  (best-effort: any failure is logged, not raised)
        slow = time.monotonic() - started > SLOW_FAILURE_S
        _count_failure(experiment_id, f"{type(exc).__name__}: {exc}", pause=slow)
        return False
    _count_success()
    return True


async def _group_send(group: str, message: dict[str, Any]) -> None:
    await asyncio.wait_for(get_channel_layer().group_send(group, message), PUBLISH_TIMEOUT_S)


def _count_failure(experiment_id: uuid.UUID, reason: str, pause: bool = False) -> None:
    global _failures, _failing_since, _paused_until
    with _lock:
        _failures += 1
        first = _failing_since < 0
        if first:
            _failing_since = _failures - 1
        if pause:
            _paused_until = time.monotonic() + PAUSE_AFTER_SLOW_FAILURE_S
        failures = _failures
    log.log(logging.WARNING if first or failures % 100 == 0 else logging.DEBUG,
            "live event of experiment %s not published (%d failures so far): %s",
            experiment_id, failures, reason)


def _count_success() -> None:
    global _failing_since
    with _lock:
        if _failing_since < 0:
            return
        missed, _failing_since = _failures - _failing_since, -1
    log.info("live events published again, after %d not published", missed)


def publish_failures() -> int:
    """Live events this process failed to publish since it started."""
    return _failures
