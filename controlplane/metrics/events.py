"""Publishing to an experiment's Channels group, always after the transaction commits.

Every message is ``{"type": "experiment.event", "event": <what the browser receives>}``; the
consumer forwards ``event`` as is (formats in docs/architecture.md).
"""
from __future__ import annotations

import json
import uuid
from functools import partial
from typing import Any, Callable, Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from rest_framework.utils.encoders import JSONEncoder

Event = dict[str, Any]


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

    A broker failure is logged, never raised: the data is stored, only the live view misses it.
    """
    transaction.on_commit(partial(_publish, experiment_id, event), robust=True)


def _publish(experiment_id: uuid.UUID, event: Event | Callable[[], Event]) -> None:
    if callable(event):
        event = event()
    async_to_sync(get_channel_layer().group_send)(
        group_name(experiment_id), {"type": "experiment.event", "event": event})
