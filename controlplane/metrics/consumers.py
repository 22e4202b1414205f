"""The live view of one experiment: ``ws/experiments/<id>/``.

On connect the consumer checks who is asking (close 4401 when anonymous, 4404 when there is no
such experiment *or* it is another user's: like the REST API's 404, the answer does not tell
which ids exist), subscribes to the experiment's events in this process
(controlplane.metrics.fanout: the process subscribes to the experiment's channel), then sends the
history; events queued meanwhile are delivered after it, minus the points the history
already held. If it cannot subscribe (Redis is down or does not answer) it closes with
4503 at once, so the page says "Reconnecting…" and retries, rather than showing "Live" on a
socket that will never get an event; and with 4503 too when the subscription ends later (Redis
stopped or restarted), so the page reconnects to a fresh history rather than missing events.
Messages are those of docs/architecture.md.

**Flow control.** daphne buffers whatever the application sends without bound (Twisted's
transport has none) and ASGI tells the application nothing of a client that stopped reading,
so the socket counts what its client has *acknowledged* instead:

- Every live message after the history starts with ``"seq"`` (1, 2, ... per socket) and
  ``"key"`` (8 random hex digits): ``{"seq": 7, "key": "3f9a0c1d", "type": "points", ...}``.
- The client sends ``{"type": "ack", "seq": 7, "key": "3f9a0c1d"}`` once it has processed
  every message up to seq 7 (the browser: every 100 messages, 128 kB or 5 s). The key
  must be the one message 7 carried: only a client that has read message 7 off the socket
  knows it, so a client cannot acknowledge what is still in the server's buffers. Anything
  else the client sends (a wrong key, an old or future seq, over 200 characters, not JSON) is
  ignored.
- Before sending, the consumer checks what is outstanding: with :data:`MAX_UNACKED_EVENTS`
  messages unacknowledged, or :data:`MAX_UNACKED_BYTES` with this message (a lone message
  larger than that still goes when nothing is outstanding), it sends nothing more (it leaves
  the experiment's events) and closes with **4008** ("too far behind") once the client has
  acknowledged all it was sent, or after :data:`CATCH_UP_S` (a client that cannot even answer
  the close is then dropped by daphne's 1 s close handshake time-out: it sees 1006); so does a
  socket whose events waiting to be sent overflow (fanout.MAX_PENDING, under a server whose
  send waits for the client). The client reconnects; the new socket's first message is the
  history (each series downsampled as always, logs' last lines, the runs' states), so the page
  loses nothing the database holds.

So one socket holds at most the history plus :data:`MAX_UNACKED_BYTES` (about 1 MiB) in the
server's buffers, whatever its client does. A client that never acknowledges (an old script)
gets the history and the first 1,000 live messages, then 4008.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections import deque
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from controlplane.experiments.models import Experiment
from controlplane.experiments.queries import experiments_for
from controlplane.experiments.serializers import ExperimentSerializer
from controlplane.metrics import downsample, fanout
from controlplane.metrics.events import PUBLISH_TIMEOUT_S, group_name, plain_json
from controlplane.metrics.models import RunLog

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
#: The live view is unavailable (the channel layer failed); the client should reconnect.
#: (ASGI servers send only 1000 or 3000-4999 from the application: 4503, like HTTP 503.)
CLOSE_UNAVAILABLE = 4503
#: The client fell too far behind (see "Flow control" above); it should reconnect.
CLOSE_TOO_FAR_BEHIND = 4008
#: Live messages sent and not acknowledged, at most.
MAX_UNACKED_EVENTS = 1000
#: Characters (bytes: events are ASCII JSON) of live messages sent and not acknowledged, at most.
MAX_UNACKED_BYTES = 1 << 20
#: A client message longer than this is no ack: ignored unparsed.
MAX_ACK_CHARS = 200
#: Once over the bound, how long the socket waits (sending nothing) for its client to
#: acknowledge what it was sent, so that the 4008 close reaches a client that was only stalled
#: behind its last message rather than being dropped by the server's close handshake time-out.
CATCH_UP_S = 10.0
#: Subscribing waits at most this long (a retry after a broker restart included).
JOIN_TIMEOUT_S = 5.0
#: How long the points of the history are remembered to drop them from live events: a point
#: committed before the history was read is published within PUBLISH_TIMEOUT_S of its commit
#: or never, so afterwards every event goes out as published, unparsed.
SENT_MEMORY_S = 2 * PUBLISH_TIMEOUT_S + 5

log = logging.getLogger(__name__)


def _may_watch(user, experiment_id: uuid.UUID) -> bool:
    return experiments_for(user).filter(pk=experiment_id).exists()


def build_history(experiment_id: uuid.UUID) -> dict[str, Any]:
    """The ``history`` message: the experiment, its runs, its points and recent log lines.

    Each series is downsampled to what a chart shows (controlplane.metrics.downsample, min and
    max per bucket); ``downsampled`` names, per run, the series that were, whose full
    resolution the chart fetches from the API when the user zooms.
    """
    experiment = (Experiment.objects.prefetch_related("runs__jobs__device")
                  .get(pk=experiment_id))
    data = plain_json(ExperimentSerializer(experiment).data)
    run_ids = [run["id"] for run in data["runs"]]
    rows, downsampled = downsample.points_by_run(run_ids, downsample.HISTORY_BUCKETS)
    points: dict[str, list[list]] = {str(run_id): [] for run_id in run_ids}
    for run_id, run_rows in rows.items():
        points[run_id] = [list(row) for row in run_rows]
    keep = settings.ESTUARY["HISTORY_LOG_LINES"]
    logs = {}
    for run in data["runs"]:
        lines = (RunLog.objects.filter(run_id=run["id"]).order_by("-id")
                 .values_list("line", flat=True)[:keep])
        logs[str(run["id"])] = list(lines)[::-1]
    return {"type": "history", "experiment": data, "runs": data["runs"], "points": points,
            "downsampled": downsampled, "logs": logs}


class ExperimentConsumer(AsyncWebsocketConsumer):
    """One socket. Events come from this process's fan-out, not from a channel of its own:
    ``channel_layer_alias`` names no layer, so Channels gives the socket no channel and no
    per-message dispatch (which would hop to a thread for every event)."""

    channel_layer_alias = "estuary.live-sockets-use-fanout"
    subscription: fanout.Subscription | None = None
    forwarding: asyncio.Task | None = None
    sent: set[tuple[str, str, int]] = set()
    sent_until = 0.0
    #: Flow control: the last seq sent and acknowledged, the characters sent and acknowledged
    #: (running totals), and per unacknowledged message, in seq order, (key, total after it).
    seq = 0
    acked = 0
    sent_chars = 0
    acked_chars = 0
    unacked: deque[tuple[str, int]]
    acked_more: asyncio.Event  # set by every valid ack

    async def connect(self) -> None:
        self.unacked, self.acked_more = deque(), asyncio.Event()
        # Accept first: a close code only reaches the client on an open socket.
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        experiment_id = self.scope["url_route"]["kwargs"]["experiment_id"]
        if not await database_sync_to_async(_may_watch)(user, experiment_id):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        try:
            self.subscription = await asyncio.wait_for(
                fanout.subscribe(group_name(experiment_id)), JOIN_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001  (any layer failure: tell the client to retry)
            log.warning("live view of experiment %s unavailable: %s: %s", experiment_id,
                        type(exc).__name__, exc)
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        history = await database_sync_to_async(build_history)(experiment_id)
        # Points committed between subscribing and reading the history arrive twice:
        # remember what the history held and drop it from the live events.
        self.sent = {(run_id, row[0], row[1]) for run_id, rows in history["points"].items()
                     for row in rows}
        self.sent_until = time.monotonic() + SENT_MEMORY_S
        await self.send(text_data=json.dumps(history))
        self.forwarding = asyncio.ensure_future(self._forward(self.subscription))

    async def disconnect(self, code: int) -> None:
        if self.forwarding is not None:
            self.forwarding.cancel()
        if self.subscription is not None:
            self.subscription.close()

    async def dispatch(self, message: dict) -> None:
        # A client message is at most an ack, which touches no database: skip Channels'
        # close_old_connections, a hop to the one thread-sensitive executor per message.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        """An ack ``{"type": "ack", "seq": n, "key": k}``: messages up to ``n`` are processed.
        Anything else is ignored; so is anything longer than :data:`MAX_ACK_CHARS`, unparsed
        (so no body, however deep, reaches a JSON decoder)."""
        if text_data is None or len(text_data) > MAX_ACK_CHARS:
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("type") != "ack":
            return
        seq = message.get("seq")
        if type(seq) is not int or not self.acked < seq <= self.seq:
            return
        key, chars_until = self.unacked[seq - self.acked - 1]
        if message.get("key") != key:
            return  # not read off the socket: the buffers may still hold it
        for _ in range(seq - self.acked):
            self.unacked.popleft()
        self.acked, self.acked_chars = seq, chars_until
        self.acked_more.set()

    async def _forward(self, subscription: fanout.Subscription) -> None:
        """Send the subscription's events, in order, until it ends (close 4503, or 4008 if it
        fell behind) or the client has too much unacknowledged (close 4008)."""
        code = CLOSE_UNAVAILABLE
        try:
            while (text := await subscription.get()) is not fanout.ENDED:
                if self.sent:
                    text = self._without_history_points(text)
                if text is None:
                    continue
                text = self._numbered(text)
                if text is None:
                    log.info("a live socket of %s has %d messages (%d characters) "
                             "unacknowledged; closing it", subscription.group,
                             self.seq - self.acked, self.sent_chars - self.acked_chars)
                    subscription.close()  # nothing more goes to this socket
                    await self._catch_up(CATCH_UP_S)
                    code = CLOSE_TOO_FAR_BEHIND
                    break
                await self.send(text_data=text)
            else:
                if subscription.behind:
                    code = CLOSE_TOO_FAR_BEHIND
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001  (a task's error would otherwise go unseen)
            log.exception("live view of %s failed", subscription.group)
        subscription.close()
        await self.close(code=code)

    async def _catch_up(self, timeout_s: float) -> None:
        """Wait until the client has acknowledged everything sent, ``timeout_s`` at most."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.acked < self.seq and (remaining := deadline - loop.time()) > 0:
            self.acked_more.clear()
            try:
                await asyncio.wait_for(self.acked_more.wait(), remaining)
            except TimeoutError:
                return

    def _numbered(self, text: str) -> str | None:
        """The event ``text`` with the next ``seq`` and a fresh ``key`` in front, counted as
        unacknowledged; None if the client may not have it (too much unacknowledged)."""
        outstanding = self.seq - self.acked
        if outstanding >= MAX_UNACKED_EVENTS:
            return None
        key = os.urandom(4).hex()
        # Events are JSON objects ("{"type": ...}"): the fields go in front, as text.
        text = f'{{"seq": {self.seq + 1}, "key": "{key}", {text[1:]}'
        if outstanding and self.sent_chars - self.acked_chars + len(text) > MAX_UNACKED_BYTES:
            return None
        self.seq += 1
        self.sent_chars += len(text)
        self.unacked.append((key, self.sent_chars))
        return text

    def _without_history_points(self, text: str) -> str | None:
        """``text`` without the points the history already sent (None if nothing is left)."""
        if time.monotonic() > self.sent_until:
            self.sent = set()  # no event can hold history points any more
            return text
        event = json.loads(text)
        if event["type"] != "points":
            return text
        fresh = [row for row in event["points"] if (event["run"], row[0], row[1]) not in self.sent]
        if not fresh:
            return None
        if len(fresh) < len(event["points"]):
            text = json.dumps({**event, "points": fresh})
        return text
