"""Whether the agent's Celery worker consumes its queue, as the heartbeat reports it.

Celery's consumer can miss a broker outage: when a job ends while Redis is down, its ack fails
(``Couldn't ack ... ConnectionError``), the Redis transport's event loop is left without the
broker's socket, and the worker never takes another job while heartbeats go on. So the agent
watches the broker itself: every heartbeat pings it; while it does not answer, the worker is
reported as not consuming; once it answers again, the worker is restarted in-process (after
the running job, if any) and reported as consuming when the new one is ready.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)


class ConsumerWatch:
    """The worker's state for the heartbeat body: ``{"consuming": bool, "detail": str}``."""

    def __init__(self, broker_url: str, restart_worker: Callable[[], None],
                 ping_timeout_s: float = 2.0):
        self.broker_url = broker_url
        self.restart_worker = restart_worker
        self.ping_timeout_s = ping_timeout_s
        self._lock = threading.Lock()
        self._consuming = False
        self._detail = "the worker is starting"
        self._down_since: datetime | None = None

    def ready(self, *_args: object) -> None:
        """The (new) worker consumes its queue: Celery's ``ready_callback``."""
        with self._lock:
            self._consuming, self._detail = True, ""
        log.info("the worker consumes its queue")

    def state(self) -> dict[str, object]:
        with self._lock:
            return {"consuming": self._consuming, "detail": self._detail}

    def check(self) -> dict[str, object]:
        """Ping the broker, restart the worker if it just came back; returns :meth:`state`."""
        try:
            self._ping()
        except redis.ResponseError:
            self._broker_up()  # it answered (e.g. an ACL without PING): it is there
        except (redis.RedisError, OSError) as exc:
            self._broker_down(exc)
        else:
            self._broker_up()
        return self.state()

    def _ping(self) -> None:
        client = redis.Redis.from_url(
            self.broker_url, socket_connect_timeout=self.ping_timeout_s,
            socket_timeout=self.ping_timeout_s, retry=Retry(NoBackoff(), 0))
        try:
            client.ping()
        finally:
            client.close()

    def _broker_down(self, exc: Exception) -> None:
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = datetime.now(timezone.utc)
            self._consuming = False
            self._detail = (f"broker unreachable since "
                            f"{self._down_since.isoformat(timespec='seconds')}: {exc}")[:500]
        if first:
            log.warning("the broker does not answer (%s); no job can be taken until it is back",
                        exc)

    def _broker_up(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            self._down_since = None
            self._detail = "the broker is back; restarting the worker (after a running job)"
        log.info("the broker is back; restarting the worker so it consumes again")
        self.restart_worker()
