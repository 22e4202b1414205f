"""Publishing to an experiment's live channel, always after the transaction commits.

Every event is PUBLISHed to the experiment's Redis pub/sub channel
(controlplane.metrics.fanout.channel_name) as the text the browser receives (JSON): encoded once
here, not once per socket, so each process's fan-out (controlplane.metrics.fanout) hands it to
its sockets as is (formats in docs/architecture.md).

Events are sent by one publisher thread per process (its own event loop and Redis connection),
in commit order, so a request never waits for the broker: a hung Redis delays no response. The
events waiting when the thread wakes go out in one pipeline (one round trip for a burst).
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
import copy
import json
import logging
import os
import queue
import threading
import time
import uuid
from typing import Any, Callable, Iterable

import redis.asyncio
from django.conf import settings
from django.db import transaction
from rest_framework.utils.encoders import JSONEncoder

from controlplane.metrics.fanout import channel_name, connection_pool

Event = dict[str, Any]

log = logging.getLogger(__name__)

#: A publish waits at most this long (a hung broker holds a socket read for much longer).
PUBLISH_TIMEOUT_S = 3.0
#: A failure that took longer than this pauses publishing for PAUSE_AFTER_SLOW_FAILURE_S.
SLOW_FAILURE_S = 0.5
PAUSE_AFTER_SLOW_FAILURE_S = 5.0
#: Events handed to the publisher thread and not yet sent, at most (beyond: dropped, counted).
MAX_WAITING_EVENTS = 10_000
#: Most events in one pipeline.
MAX_EVENTS_PER_SEND = 200

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

    The event is built and JSON-encoded in the committing thread (a callable may read the
    database), then handed to this process's publisher thread: the request never waits for the
    broker. A broker failure is logged and counted, never raised: the data is stored, only the
    live view misses it.
    """

    def publish() -> None:
        try:
            text = json.dumps(event() if callable(event) else event, cls=JSONEncoder)
        except Exception as exc:  # noqa: BLE001  (best-effort, as sending)
            _count_failure(experiment_id, f"{type(exc).__name__}: {exc}")
            return
        _publisher().submit(experiment_id, text)

    transaction.on_commit(publish)


def drain(timeout_s: float = 10.0) -> bool:
    """Wait until this process's publisher has sent (or dropped) every event handed to it;
    False if some are still waiting after ``timeout_s``."""
    publisher = _the_publisher
    deadline = time.monotonic() + timeout_s
    while publisher is not None and publisher.queue.unfinished_tasks:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class _Publisher:
    """One daemon thread per process, with its own event loop and channel layer, that sends the
    events in the order they were committed."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.Queue[tuple[uuid.UUID, str]] = queue.Queue(MAX_WAITING_EVENTS)
        threading.Thread(target=self._run, name="live-events", daemon=True).start()

    def submit(self, experiment_id: uuid.UUID, text: str) -> None:
        try:
            self.queue.put_nowait((experiment_id, text))
        except queue.Full:
            _count_failure(experiment_id, f"{MAX_WAITING_EVENTS} events already wait for the "
                                          "broker")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        config, client = None, None
        while True:
            events = [self.queue.get()]
            while len(events) < MAX_EVENTS_PER_SEND:  # what else waits: one round trip
                try:
                    events.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if settings.CHANNEL_LAYERS != config:  # this thread's own connection
                    config = copy.deepcopy(settings.CHANNEL_LAYERS)
                    client = redis.asyncio.Redis(connection_pool=connection_pool())
                _send(loop, client, events)
            except Exception:  # noqa: BLE001  (the thread must outlive any one event)
                log.exception("live events of experiments %s not published",
                              sorted({str(experiment_id) for experiment_id, _ in events}))
            finally:
                for _ in events:
                    self.queue.task_done()


_publisher_lock = threading.Lock()
_the_publisher: _Publisher | None = None


def _publisher() -> _Publisher:
    global _the_publisher
    with _publisher_lock:
        if _the_publisher is None or _the_publisher.pid != os.getpid():  # none yet, or forked
            _the_publisher = _Publisher()
        return _the_publisher


def _send(loop: asyncio.AbstractEventLoop, client, events: list[tuple[uuid.UUID, str]]) -> bool:
    """PUBLISH encoded events to their experiments' channels, in order, in one pipeline; False
    (each counted, logged) if not."""
    if time.monotonic() < _paused_until:
        for experiment_id, _ in events:
            _count_failure(experiment_id, "publishing paused after a slow broker failure")
        return False
    started = time.monotonic()
    try:
        loop.run_until_complete(_publish(client, [
            (channel_name(group_name(experiment_id)), text) for experiment_id, text in events]))
    except Exception as exc:  # noqa: BLE001  (best-effort: any failure is logged, not raised)
        slow = time.monotonic() - started > SLOW_FAILURE_S
        for experiment_id, _ in events:
            _count_failure(experiment_id, f"{type(exc).__name__}: {exc}", pause=slow)
        return False
    _count_success()
    return True


async def _publish(client, messages: list[tuple[str, str]]) -> None:
    async def send() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for channel, text in messages:
                pipe.publish(channel, text)
            await pipe.execute()

    await asyncio.wait_for(send(), PUBLISH_TIMEOUT_S)


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
