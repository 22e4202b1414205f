"""The agent's :class:`ml.reporting.Reporter`: batches points and log lines to the control plane.

The method calls :meth:`HttpReporter.metric` from its training loop, which only appends to a
buffer. A background thread sends the buffer every ``flush_interval_s`` or as soon as
``batch_size`` points wait, retrying temporary failures with backoff. Points it cannot deliver
are written to the device's :class:`~agents.spool.Spool` and sent first on the next flush (or
by the daemon's resender after the job, or at the next start), so none is dropped; the server
ingests idempotently on (run, name, step), so a resent batch never duplicates.
"""
from __future__ import annotations

import logging
import threading
import time

from agents.client import ControlPlane, Rejected, Retryable
from agents.retry import with_backoff
from agents.spool import Spool
from agents.tracker import RunningJob
from ml import wire

log = logging.getLogger(__name__)

#: Log lines kept while the server is unreachable; older ones are dropped past this.
MAX_BUFFERED_LINES = 10_000
#: The server's limits on a log batch.
MAX_LINES_PER_POST = wire.MAX_LOG_LINES_PER_BATCH
MAX_LINE_CHARS = wire.MAX_LOG_LINE_CHARS


class HttpReporter:
    """Reporter for one run, posting to ``/api/v1/runs/<run_id>/metrics/`` and ``logs/``.

    Use as a context manager (or call :meth:`start` and :meth:`close`): leaving it flushes
    everything, waiting up to ``final_flush_s`` for the server.
    """

    def __init__(self, client: ControlPlane, run_id: str, job: RunningJob, spool: Spool, *,
                 flush_interval_s: float = 0.5, batch_size: int = 200,
                 give_up_after_s: float = 8.0, final_flush_s: float = 30.0):
        self.client = client
        self.run_id = run_id
        self.job = job
        self.spool = spool
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.give_up_after_s = give_up_after_s
        self.final_flush_s = final_flush_s
        self.delivered = 0  # points the server acknowledged
        self._start = time.perf_counter()
        self._lock = threading.Lock()
        self._points: list[dict] = []
        self._lines: list[str] = []
        self._unsent: list[dict] = spool.points(run_id)  # left over from an earlier attempt
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"reporter-{run_id[:8]}", daemon=True)

    # -- the Reporter protocol (called by the method) ---------------------------------------
    def metric(self, name: str, step: int, value: float, sim_time_s: float) -> None:
        # Checked here, as the server would: one bad point must fail the method that made it,
        # not get a whole batch refused later.
        point = wire.check_point(name, step, value, sim_time_s,
                                 time.perf_counter() - self._start)
        with self._lock:
            self._points.append(point)
            full = len(self._points) >= self.batch_size
        if full:
            self._wake.set()

    def log(self, message: str) -> None:
        lines = [line[:MAX_LINE_CHARS] for line in str(message).splitlines()] or [""]
        with self._lock:
            self._lines.extend(lines)
            del self._lines[:-MAX_BUFFERED_LINES]
        for line in lines:
            log.info("[run %s] %s", self.run_id[:8], line)

    def should_stop(self) -> bool:
        return self.job.should_stop()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "HttpReporter":
        self._thread.start()
        return self

    def close(self) -> bool:
        """Stop the background thread and flush what is left; True if the server has it all."""
        self._closing.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self._flush(self.final_flush_s, stop=None)
        return not self._unsent

    def __enter__(self) -> "HttpReporter":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def unsent(self) -> int:
        """Points spooled on disk because the server could not take them yet."""
        return len(self._unsent)

    # -- sending --------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._closing.is_set():
                break
            try:
                self._flush(self.give_up_after_s, stop=self._closing)
            except Exception:  # the thread must survive anything; close() flushes again
                log.exception("reporter flush failed for run %s", self.run_id)

    def _flush(self, give_up_after_s: float, stop: threading.Event | None) -> None:
        with self._lock:
            new, self._points = self._points, []
            lines, self._lines = self._lines, []
        self._send_points(self._unsent + new, give_up_after_s, stop)
        if lines:
            self._send_lines(lines, give_up_after_s, stop)

    def _send_points(self, points: list[dict], give_up_after_s: float,
                     stop: threading.Event | None) -> None:
        had_spool = bool(self._unsent)
        for start in range(0, len(points), self.batch_size):
            chunk = points[start:start + self.batch_size]
            try:
                answer = with_backoff(lambda: self.client.post_metrics(self.run_id, chunk),
                                      give_up_after_s=give_up_after_s, stop=stop,
                                      what=f"metrics of run {self.run_id}")
            except Retryable as exc:
                self._unsent = points[start:]
                self.spool.replace_points(self.run_id, self._unsent)
                log.warning("control plane unavailable (%s); %d points kept in the spool",
                            exc, len(self._unsent))
                return
            except Rejected as exc:
                # A 4xx will not change on retry; say so loudly rather than loop forever.
                log.error("server refused %d points of run %s: %s", len(chunk), self.run_id, exc)
                continue
            self.delivered += int(answer.get("accepted", len(chunk)))
            if answer.get("cancelled"):
                self.job.cancelled.set()
        self._unsent = []
        if had_spool:
            self.spool.replace_points(self.run_id, [])

    def _send_lines(self, lines: list[str], give_up_after_s: float,
                    stop: threading.Event | None) -> None:
        for start in range(0, len(lines), MAX_LINES_PER_POST):
            chunk = lines[start:start + MAX_LINES_PER_POST]
            try:
                with_backoff(lambda: self.client.post_logs(self.run_id, chunk),
                             give_up_after_s=give_up_after_s, stop=stop, what="log lines")
            except Retryable:
                with self._lock:  # keep them, in order, ahead of newer lines
                    self._lines[:0] = lines[start:]
                    del self._lines[:-MAX_BUFFERED_LINES]
                return
            except Rejected as exc:
                log.error("server refused %d log lines of run %s: %s", len(chunk), self.run_id, exc)
