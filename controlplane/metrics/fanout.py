"""Per-process fan-out of experiment events to this process's WebSockets, over Redis pub/sub.

An event is PUBLISHed once to its experiment's Redis channel (:func:`channel_name`,
controlplane.metrics.events). Each ASGI process holds one subscriber connection, SUBSCRIBEd to the
channels of the experiments it has local sockets for, and one receive loop that hands each
event's text, as the publisher encoded it, to every local socket's queue. So an event costs the
broker one PUBLISH and each process one read, however many of its sockets watch. (The Channels
layer's groups cost four sequential round trips per received message on the event loop, and the
publisher three per send: with 20 experiments live in one process the receive loop fell behind
under load, seconds late, and group_send dropped what overflowed, issue #20.) More sockets than a
process serves: more processes on the same Redis, each subscribed to the channels it needs.

Guarantees, as the consumer relies on them:

- **No gap at a join.** :func:`subscribe` returns once Redis has confirmed this process's
  subscription to the channel (confirmations come in command order on the one connection) *and*
  the socket is registered locally; every event published after that reaches it. The consumer
  reads the history after subscribing, so an event is either in the history (committed before)
  or delivered (published after), possibly both (the consumer drops those points).
- **Order.** One connection and one receive loop per process; each queue in the order received.
- **No silent loss.** The subscriber connection never reconnects by itself. If it fails (Redis
  stopped or restarted), or Redis answers nothing, not even a PING, for :data:`PING_S` twice
  over (hung), every subscription ends (:data:`ENDED`): its socket closes and the page reconnects
  to a fresh history; the next subscription opens a new connection. A socket that falls
  :data:`MAX_PENDING` events behind ends the same way (``behind`` set: the consumer closes
  with 4008 rather than 4503) rather than losing events or holding memory for it. (Redis itself
  drops a subscriber whose output buffer overflows: the connection fails, as above.) Under
  daphne a send never waits, so the queue does not grow while the client lags: what bounds
  that socket is the consumer's flow control (acknowledgements, controlplane.metrics.consumers).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque

from django.conf import settings

log = logging.getLogger(__name__)

#: What a subscription's queue yields when it has ended (the socket must close; the page
#: reconnects and gets the history again).
ENDED = None
#: Events one socket may have waiting before it is ended as too slow.
MAX_PENDING = 1000
#: With nothing received for this long the loop PINGs Redis; nothing for as long again after
#: the PING: Redis hangs, every subscription ends.
PING_S = 10.0


def channel_name(group: str) -> str:
    """The Redis pub/sub channel of an experiment's group (``events.group_name``), under the
    channel layer's prefix (devices' broker users may use no channel at all)."""
    return f"{layer_config()['prefix']}.live.{group}"


def layer_config() -> dict:
    """The Channels layer's CONFIG: the same Redis (first host) and prefix serve pub/sub."""
    return settings.CHANNEL_LAYERS["default"]["CONFIG"]


def connection_pool():
    """A redis.asyncio connection pool for the channel layer's first host (as channels_redis
    builds it: URL or connection keywords)."""
    from channels_redis.utils import create_pool

    host = layer_config()["hosts"][0]
    return create_pool({"address": host} if isinstance(host, str) else host)


class Subscription:
    """One socket's events of one experiment: :meth:`get` the next text (or :data:`ENDED`);
    :meth:`close` when the socket goes."""

    def __init__(self, hub: "_Hub", group: str, connection: "_Connection | None" = None,
                 channel: bytes = b"") -> None:
        self._hub, self.group = hub, group
        self._connection, self._channel = connection, channel
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.ended = False
        self.closed = False
        #: Ended because :data:`MAX_PENDING` events waited (the client is too slow), not
        #: because the connection failed.
        self.behind = False

    async def get(self) -> str | None:
        """The next event's text, or :data:`ENDED`."""
        return await self._queue.get()

    def deliver(self, text: str) -> None:
        if self.ended:
            return
        if self._queue.qsize() >= MAX_PENDING:
            log.warning("a live socket of %s fell %d events behind; closing it", self.group,
                        MAX_PENDING)
            self.behind = True
            self.end()
            return
        self._queue.put_nowait(text)

    def end(self) -> None:
        """No more events: queued ones are dropped, :data:`ENDED` comes next."""
        if not self.ended:
            self.ended = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(ENDED)

    def close(self) -> None:
        """The socket is gone: stop delivering; the process unsubscribes with its last local
        socket. Idempotent."""
        self.ended = True
        if not self.closed:
            self.closed = True
            self._hub.leave(self)


class _Connection:
    """One subscriber connection and what it is subscribed to (a failed one is never reused)."""

    def __init__(self, redis_connection) -> None:
        self.redis = redis_connection
        self.sockets: dict[bytes, set[Subscription]] = {}  # channel -> registered sockets
        self.subscribed: set[bytes] = set()  # channels whose last command sent was SUBSCRIBE
        self.joining: dict[bytes, asyncio.Future] = {}  # the SUBSCRIBE in flight per channel
        self.waiting: dict[bytes, int] = {}  # joins waiting for it
        # Per channel, the confirmations still to come, in order: the SUBSCRIBE's future, or
        # None for an UNSUBSCRIBE.
        self.expected: dict[bytes, deque] = {}
        self.failed = False

    def send(self, *command) -> None:
        """Write a command now (the reply comes to the receive loop). Never reconnects."""
        if self.failed or not self.redis.is_connected:
            raise ConnectionError("the subscriber connection is closed")
        # The stream's writer, synchronously: send_command would await (and reconnect).
        self.redis._writer.writelines(self.redis.pack_command(*command))


class _Hub:
    """This event loop's subscriber connection and its receive loop."""

    def __init__(self) -> None:
        self.current: _Connection | None = None
        self.receiving: asyncio.Task | None = None
        self.connecting: asyncio.Future | None = None

    async def _connection(self) -> _Connection:
        if self.current is not None and not self.current.failed:
            return self.current
        if self.connecting is None:
            self.connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self.connecting)
        finally:
            if self.connecting is not None and self.connecting.done():
                self.connecting = None

    async def _connect(self) -> _Connection:
        pool = connection_pool()
        # Replies as RESP2 lists of bytes, whatever the layer's own settings.
        pool.connection_kwargs.update(decode_responses=False)
        redis_connection = pool.make_connection()
        await redis_connection.connect()
        self.current = connection = _Connection(redis_connection)
        self.receiving = asyncio.ensure_future(self._receive(connection))
        return connection

    async def join(self, group: str) -> Subscription:
        connection = await self._connection()
        channel = channel_name(group).encode()
        if channel not in connection.subscribed:
            # Joins that arrive while one SUBSCRIBE is on its way share it.
            confirmed = asyncio.get_running_loop().create_future()
            connection.send("SUBSCRIBE", channel)
            connection.subscribed.add(channel)
            connection.joining[channel] = confirmed
            connection.expected.setdefault(channel, deque()).append(confirmed)
        confirmed = connection.joining.get(channel)
        if confirmed is not None:
            connection.waiting[channel] = connection.waiting.get(channel, 0) + 1
            try:
                await asyncio.shield(confirmed)
            except BaseException:  # cancelled (timed out) or failed: nobody may need it now
                connection.waiting[channel] -= 1
                self._unsubscribe_if_unused(connection, channel)
                raise
            connection.waiting[channel] -= 1
            if connection.joining.get(channel) is confirmed:
                del connection.joining[channel]
        if connection.failed:
            raise ConnectionError("the subscriber connection failed while joining")
        subscription = Subscription(self, group, connection, channel)
        connection.sockets.setdefault(channel, set()).add(subscription)
        return subscription

    def leave(self, subscription: Subscription) -> None:
        connection = subscription._connection
        if connection is None:
            return
        sockets = connection.sockets.get(subscription._channel, set())
        sockets.discard(subscription)
        self._unsubscribe_if_unused(connection, subscription._channel)

    def _unsubscribe_if_unused(self, connection: _Connection, channel: bytes) -> None:
        if (connection.failed or channel not in connection.subscribed
                or connection.sockets.get(channel) or connection.waiting.get(channel)):
            return
        connection.subscribed.discard(channel)
        connection.sockets.pop(channel, None)
        try:
            connection.send("UNSUBSCRIBE", channel)
            connection.expected.setdefault(channel, deque()).append(None)
        except ConnectionError:
            pass  # the receive loop ends everything

    async def _receive(self, connection: _Connection) -> None:
        """Hand every message to the sockets of its channel, until the connection fails."""
        redis_connection, pinged = connection.redis, False
        try:
            while True:
                # (push_request: RESP3 delivers messages as pushes; RESP2 as plain replies)
                reply = await redis_connection.read_response(timeout=PING_S, push_request=True)
                if reply is None:  # nothing for PING_S
                    if pinged:
                        raise TimeoutError(f"Redis answered nothing for {2 * PING_S:.0f} s")
                    connection.send("PING")
                    pinged = True
                    continue
                pinged = False
                if not isinstance(reply, list):  # PONG
                    continue
                kind = reply[0]
                if kind == b"message":
                    text = reply[2].decode()
                    for subscription in connection.sockets.get(reply[1], ()):
                        subscription.deliver(text)
                elif kind in (b"subscribe", b"unsubscribe"):
                    waiting = connection.expected.get(reply[1])
                    confirmed = waiting.popleft() if waiting else None
                    if waiting is not None and not waiting:
                        del connection.expected[reply[1]]
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (any failure ends every subscription)
            log.warning("live events stopped (%s: %s); closing %d sockets", type(exc).__name__,
                        exc, sum(len(s) for s in connection.sockets.values()))
        finally:
            connection.failed = True
            if self.current is connection:
                self.current = None
            for confirmed in connection.joining.values():
                if not confirmed.done():
                    confirmed.set_exception(ConnectionError("the subscriber connection failed"))
                    confirmed.exception()  # retrieved: a join that gave up awaits it no more
            for sockets in connection.sockets.values():
                for subscription in sockets:
                    subscription.end()
            await redis_connection.disconnect(nowait=True)


_hubs: dict[asyncio.AbstractEventLoop, _Hub] = {}


async def subscribe(group: str) -> Subscription:
    """Subscribe to ``group``'s events in this process (subscribing the process's connection
    to its channel if this is the first local socket). Raises if Redis fails; the caller bounds
    the wait."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for stale in [other for other in _hubs if other.is_closed()]:
            del _hubs[stale]
        hub = _hubs[loop] = _Hub()
    return await hub.join(group)
