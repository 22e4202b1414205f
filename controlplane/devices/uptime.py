"""The web server's liveness mark: each ASGI process records, every half heartbeat interval,
that it is accepting requests, so the reaper can tell a dead agent from a control-plane outage
(see docs/controlplane.md, "Jobs and the reaper").

Marks begin with the first request the process serves (:func:`marks_uptime`), not when the
application is imported: a server can take many seconds from import to listening, and marks
from a server nobody can reach yet would use up the agents' grace.
"""
from __future__ import annotations

import atexit
import logging
import sys
import threading
from datetime import datetime
from typing import Any, Awaitable, Callable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from controlplane.devices.models import ServerUptime

log = logging.getLogger(__name__)


@transaction.atomic
def mark_accepting(now: datetime | None = None) -> ServerUptime:
    """Record that a server accepts requests now; a gap since the last mark was an outage."""
    now = now or timezone.now()
    uptime = ServerUptime.objects.select_for_update().filter(pk=ServerUptime.ROW).first()
    if uptime is None:
        return ServerUptime.objects.create(up_since=now, seen_at=now, down_since=now)
    if uptime.is_down(now):
        uptime.down_since, uptime.up_since = uptime.seen_at, now
    uptime.seen_at = max(uptime.seen_at, now)
    uptime.save()
    return uptime


def start_marking() -> threading.Thread:
    """Mark on a daemon thread of this (server) process, every half heartbeat interval, until
    the server begins shutting down."""
    period_s = settings.ESTUARY["HEARTBEAT_INTERVAL_S"] / 2
    stop = threading.Event()
    _stop_on_shutdown(stop)

    def loop() -> None:
        while not stop.is_set():
            try:
                mark_accepting()
            except Exception:  # noqa: BLE001  (a database hiccup must not end the marks)
                log.exception("could not record the server's liveness mark")
                connection.close()
            stop.wait(period_s)

    thread = threading.Thread(target=loop, name="uptime-mark", daemon=True)
    thread.start()
    return thread


def _stop_on_shutdown(stop: threading.Event) -> None:
    """Set ``stop`` when the server stops accepting requests. A stopping daphne can take
    seconds to exit (open connections, the database lane's threads); marks from it then would
    hide the outage that follows and use up the agents' grace, so under daphne (Twisted) the
    marks end with the reactor's shutdown, elsewhere at interpreter exit."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is not None:
        reactor.addSystemEventTrigger("before", "shutdown", stop.set)
    atexit.register(stop.set)


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                   Awaitable[Any]]


def marks_uptime(app: ASGIApp) -> ASGIApp:
    """Wrap an ASGI application so that its first request starts :func:`start_marking`."""
    started = threading.Event()

    async def application(scope, receive, send):
        if not started.is_set() and scope["type"] in ("http", "websocket"):
            started.set()
            start_marking()
        return await app(scope, receive, send)

    return application
