"""The heartbeat thread: tells the control plane the agent is alive and which jobs it runs.

The answer's ``cancel_jobs`` flags those jobs in the :class:`~agents.tracker.JobTracker`; their
reporters see it through ``should_stop()``. Each heartbeat also carries the worker's state
(``{"consuming", "detail"}``, from ``worker_state``) and the machine's CPU, memory and GPU use
(:mod:`agents.resources`). After each heartbeat that got through,
spooled points and finish reports of finished jobs are resent (see :mod:`agents.resend`).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from agents.client import AuthRejected, ControlPlane, Rejected, Retryable
from agents.resources import resource_usage
from agents.tracker import JobTracker

log = logging.getLogger(__name__)


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

    def beat(self) -> None:
        """One heartbeat; raises the client's errors (the caller decides)."""
        worker = self.worker_state() if self.worker_state else None
        cancelled = self.tracker.cancel(self.client.heartbeat(
            self.tracker.running(), worker, resources=resource_usage()))
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
            if self._failing:
                log.info("heartbeat back to normal")
                self._failing = False
            if self.after_beat:
                try:
                    self.after_beat()
                except Exception:
                    log.exception("resending spooled data failed")

    def stop(self) -> None:
        self._stop_event.set()
