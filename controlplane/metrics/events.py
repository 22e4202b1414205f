"""Publishing to an experiment's Channels group, always after the transaction commits.

Every message is ``{"type": "experiment.event", "event": <what the browser receives>}``; the
consumer forwards ``event`` as is (formats in docs/architecture.md).

Publishing is best-effort: the data is already committed, so a broker failure must never turn
the request into a 5xx. Each failure is logged with the running count of failures of this
process (:func:`publish_failures`), the live view simply misses that event.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any, Callable, Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from rest_framework.utils.encoders import JSONEncoder

Event = dict[str, Any]

log = logging.getLogger(__name__)
_failures = 0
_failures_lock = threading.Lock()


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
    """Send ``event`` to the experiment's group now; False (logged, counted) if it failed."""
    global _failures
    try:
        if callable(event):
            event = event()
        async_to_sync(get_channel_layer().group_send)(
            group_name(experiment_id), {"type": "experiment.event", "event": event})
    except Exception as exc:  # noqa: BLE001  (best-effort: any failure is logged, not raised)
        with _failures_lock:
            _failures += 1
            failures = _failures
        log.warning("live event of experiment %s not published (%d failures so far): %s: %s",
                    experiment_id, failures, type(exc).__name__, exc)
        return False
    return True


def publish_failures() -> int:
    """Live events this process failed to publish since it started."""
    return _failures
