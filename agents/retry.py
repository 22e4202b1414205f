"""Exponential backoff for calls whose failure may be temporary (:class:`agents.client.Retryable`)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from agents.client import Retryable

T = TypeVar("T")
log = logging.getLogger(__name__)


def with_backoff(call: Callable[[], T], *, give_up_after_s: float, first_delay_s: float = 0.25,
                 max_delay_s: float = 4.0, stop: threading.Event | None = None,
                 what: str = "request") -> T:
    """Run ``call`` until it succeeds, retrying :class:`Retryable` failures with doubling delays.

    Gives up (re-raising the last failure) once ``give_up_after_s`` have passed or ``stop`` is
    set. Any other exception propagates at once.
    """
    deadline = time.monotonic() + give_up_after_s
    delay = first_delay_s
    while True:
        try:
            return call()
        except Retryable as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                raise
            log.debug("%s failed (%s); retrying in %.2fs", what, exc, delay)
            wait = min(delay, remaining)
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
            delay = min(delay * 2, max_delay_s)
