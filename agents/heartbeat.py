"""The heartbeat thread: tells the control plane the agent is alive and which jobs it runs.

The answer's ``cancel_jobs`` flags those jobs in the :class:`~agents.tracker.JobTracker`; their
reporters see it through ``should_stop()``. Each heartbeat also carries the worker's state
(``{"consuming", "detail"}``, from ``worker_state``) and the machine's CPU, memory and GPU use
(:mod:`agents.resources`). After each heartbeat that got through,
spooled points and finish reports of finished jobs are resent (see :mod:`agents.resend`), on a
thread of their own, one resend at a time: a long spool after an outage (hundreds of batches)
must not hold the heartbeats back, or the device would be judged dead while it catches up.

A heartbeat not answered within two intervals is given up (:func:`heartbeat_timeout`) and the
next one goes out on a fresh connection. With the client's 30 s read timeout, one heartbeat sent
on a connection that a stopping server accepted but never answers held the thread past the
missed-heartbeats window: after a server restart the device then missed its grace and its jobs
were failed although the agent was alive (seen in the server-outage fault test under load).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from agents.client import DEFAULT_TIMEOUT, AuthRejected, ControlPlane, Rejected, Retryable
from agents.resources import resource_usage
from agents.tracker import JobTracker

log = logging.getLogger(__name__)


def heartbeat_timeout(interval_s: float) -> tuple[float, float]:
    """(connect, read) seconds for one heartbeat: at most two intervals (at least 1 s), within
    the client's defaults."""
    bound = max(2 * interval_s, 1.0)
    return min(DEFAULT_TIMEOUT[0], bound), min(DEFAULT_TIMEOUT[1], bound)


class Heartbeat(threading.Thread):
    """Posts a heartbeat every ``interval_s`` until :meth:`stop`."""

    def __init__(self, client: ControlPlane, tracker: JobTracker, interval_s: float,
                 worker_state: Callable[[], dict[str, Any]] | None = None,
                 after_beat: Callable[[], None] | None = None,
                 on_credential_rejected: Callable[[str], None] | None = None):
        super().__init__(name="heartbeat", daemon=True)
        self.client = client
        self.tracker = tracker
        self.interval_s = interval_s
        self.worker_state = worker_state
        self.after_beat = after_beat
        self.on_credential_rejected = on_credential_rejected
        self._stop_event = threading.Event()
        self._failing = False
        self._resending = threading.Lock()  # held while after_beat runs
        #: Heartbeats answered so far.
        self.beats = 0

    def beat(self) -> None:
        """One heartbeat; raises the client's errors (the caller decides)."""
        worker = self.worker_state() if self.worker_state else None
        cancelled = self.tracker.cancel(self.client.heartbeat(
            self.tracker.running(), worker, resources=resource_usage(),
            timeout=heartbeat_timeout(self.interval_s)))
        for job_id in cancelled:
            log.info("job %s cancelled by the control plane", job_id)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                self.beat()
            except AuthRejected as exc:
                log.error("the control plane no longer accepts this device's credential: %s", exc)
                if self.on_credential_rejected:
                    self.on_credential_rejected(str(exc))
                return
            except (Retryable, Rejected) as exc:
                if not self._failing:
                    log.warning("heartbeat failed: %s (will keep trying)", exc)
                self._failing = True
                continue
            self.beats += 1
            if self._failing:
                log.info("heartbeat back to normal")
                self._failing = False
            if self.after_beat and self._resending.acquire(blocking=False):
                threading.Thread(target=self._after_beat, name="heartbeat-resend",
                                 daemon=True).start()

    def _after_beat(self) -> None:
        try:
            self.after_beat()
        except Exception:
            log.exception("resending spooled data failed")
        finally:
            self._resending.release()

    def stop(self) -> None:
        self._stop_event.set()
