"""Per-process fan-out of experiment events to this process's WebSockets.

Each ASGI process is one member of an experiment's Channels group, however many of its sockets
watch that experiment: one channel of its own (``specific.<process>!live``) joins the group of
every experiment that has a local socket, and one receive loop hands each event's text, as the
publisher encoded it, to every local socket's queue. So an event costs the broker one message
and the process one msgpack decode per process, not per socket, and no socket's delivery goes
through a thread (Channels' consumer dispatch runs ``close_old_connections`` in the one
thread-sensitive executor for every message, behind the HTTP requests: that, per socket, was
the limit of one process). More sockets than a process serves: more processes behind the same
Redis, each a member of the groups it needs.

Guarantees, as the consumer relies on them:

- **No gap at a join.** :func:`subscribe` returns once this process is (again) a member of the
  group in Redis *and* the subscription is registered locally; every event published after
  that reaches it. The consumer reads the history after subscribing, so an event is either in
  the history (committed before) or delivered (published after), possibly both (the consumer
  drops those points).
- **Order.** One receive loop per process, each subscription's queue in the order received.
- **No silent loss.** If the receive loop fails (Redis stopped, restarted or hangs past the
  socket timeout), every subscription ends (:data:`ENDED`), so its socket closes and the page
  reconnects to a fresh history; the next subscription starts a new loop. A socket that falls
  :data:`MAX_PENDING` events behind (an ASGI server whose send waits for a slow client) ends the
  same way rather than losing events or holding memory for it.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

#: What a subscription's queue yields when it has ended (the socket must close; the page
#: reconnects and gets the history again).
ENDED = None
#: Events one socket may have waiting before it is ended as too slow.
MAX_PENDING = 1000
#: How often the process renews its memberships (channels_redis forgets a group member after
#: its ``group_expiry``, a day: a page left open overnight would stop getting events).
REFRESH_S = 3600.0


class Subscription:
    """One socket's events of one experiment: :meth:`get` the next text (or :data:`ENDED`);
    :meth:`close` when the socket goes."""

    def __init__(self, hub: "_Hub", group: str, entry: "_Group") -> None:
        self._hub, self.group, self._entry = hub, group, entry
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.ended = False
        self.closed = False

    async def get(self) -> str | None:
        """The next event's text, or :data:`ENDED`."""
        return await self._queue.get()

    def deliver(self, text: str) -> None:
        if self.ended:
            return
        if self._queue.qsize() >= MAX_PENDING:
            log.warning("a live socket of %s fell %d events behind; closing it", self.group,
                        MAX_PENDING)
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
        """The socket is gone: stop delivering; the process leaves the group with its last
        local socket. Idempotent."""
        self.ended = True
        if not self.closed:
            self.closed = True
            self._hub.leave(self, self._entry)


@dataclass
class _Group:
    subscriptions: set[Subscription] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # orders group_add/discard
    adding: asyncio.Future | None = None  # a group_add in flight, shared by concurrent joins


class _Hub:
    """This event loop's membership of groups and its one receive loop."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.groups: dict[str, _Group] = {}
        self.receiving: asyncio.Task | None = None

    async def join(self, group: str) -> Subscription:
        if self.channel is None:
            self.channel = await self.layer.new_channel(prefix="live")
        if self.receiving is None or self.receiving.done():
            self.receiving = asyncio.ensure_future(self._receive(self.groups))
            asyncio.ensure_future(self._refresh(self.groups))
        groups = self.groups
        entry = groups.setdefault(group, _Group())
        if entry.adding is None:
            # Joins that arrive while one group_add is on its way share it: the membership it
            # makes precedes their registration below, which is all a join needs.
            entry.adding = asyncio.ensure_future(self._add(group, entry))
        await asyncio.shield(entry.adding)
        if self.groups is not groups or groups.get(group) is not entry:
            raise ConnectionError("the channel layer failed while joining")
        subscription = Subscription(self, group, entry)
        entry.subscriptions.add(subscription)
        return subscription

    async def _add(self, group: str, entry: _Group) -> None:
        try:
            async with entry.lock:
                await self.layer.group_add(group, self.channel)
        finally:
            entry.adding = None

    def leave(self, subscription: Subscription, entry: _Group) -> None:
        entry.subscriptions.discard(subscription)
        if (not entry.subscriptions and entry.adding is None
                and self.groups.get(subscription.group) is entry):  # not ended by a failure
            asyncio.ensure_future(self._discard(subscription.group, entry))

    async def _discard(self, group: str, entry: _Group) -> None:
        async with entry.lock:
            if entry.subscriptions or entry.adding is not None:
                return  # joined again meanwhile
            if self.groups.get(group) is entry:
                del self.groups[group]
            try:
                await asyncio.wait_for(self.layer.group_discard(group, self.channel), 5)
            except Exception:  # noqa: BLE001  (the membership expires on its own)
                log.info("could not leave group %s; it expires by itself", group)

    async def _refresh(self, groups: dict[str, _Group]) -> None:
        """Renew the memberships of the groups that have local sockets, every REFRESH_S, for
        as long as this receive loop's ``groups`` are the current ones."""
        while True:
            await asyncio.sleep(REFRESH_S)
            if self.groups is not groups:
                return
            for group, entry in list(groups.items()):
                if entry.subscriptions and entry.adding is None:
                    entry.adding = asyncio.ensure_future(self._add(group, entry))
                    try:
                        await asyncio.shield(entry.adding)
                    except Exception as exc:  # noqa: BLE001  (the receive loop sees outages)
                        log.info("could not renew group %s: %s", group, exc)

    async def _receive(self, groups: dict[str, _Group]) -> None:
        """Hand every event to the subscriptions of its group, until the layer fails."""
        try:
            while True:
                message = await self.layer.receive(self.channel)
                entry = groups.get(message.get("group"))
                if entry is not None:
                    text = message["text"]
                    for subscription in entry.subscriptions:
                        subscription.deliver(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (any layer failure ends every subscription)
            log.warning("live events stopped (%s: %s); closing %d sockets", type(exc).__name__,
                        exc, sum(len(e.subscriptions) for e in groups.values()))
        finally:
            if self.groups is groups:
                self.groups = {}
            for entry in groups.values():
                for subscription in entry.subscriptions:
                    subscription.end()


_hubs: dict[asyncio.AbstractEventLoop, _Hub] = {}


async def subscribe(group: str) -> Subscription:
    """Subscribe to ``group``'s events in this process (joining the group in Redis if this is
    the first local socket). Raises if the channel layer fails (Redis down); the caller bounds
    the wait."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for stale in [other for other in _hubs if other.is_closed()]:
            del _hubs[stale]
        hub = _hubs[loop] = _Hub()
    return await hub.join(group)
