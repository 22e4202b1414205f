"""The agent's :class:`ml.reporting.Reporter`: batches points and log lines to the control plane.

The method calls :meth:`HttpReporter.metric` from its training loop, which only appends to a
buffer. A background thread sends the buffer every ``flush_interval_s`` or as soon as
``batch_size`` points wait, retrying temporary failures with backoff. Up to ``in_flight``
batches are sent at once (each on its own keep-alive connection), and full batches buffered
meanwhile join as soon as one is answered: one batch at a time, an agent waits for each POST's
whole chain (its durable commit included) and cannot pass ~10,000 points/s (issue #20). Points
it cannot deliver (every batch not acknowledged once one gives up, oldest first) are written to
the device's :class:`~agents.spool.Spool` and sent first on the next flush (or by the daemon's
resender after the job, or at the next start), so none is dropped; the server ingests
idempotently on (run, name, step), so a resent batch, or batches stored out of order, never
duplicate. :meth:`HttpReporter.close` returns only once every batch in flight is answered.

Log lines are numbered per run from 0 (``seq``) as they are logged; the server stores each
(run, seq) once, so a batch retried after a lost answer stores nothing twice. Lines it cannot
deliver are spooled with their numbers, like points.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Iterator

from agents.client import ControlPlane, Rejected, Retryable
from agents.retry import with_backoff
from agents.spool import Spool
from agents.tracker import RunningJob
from ml import wire

log = logging.getLogger(__name__)

#: Metric batches a reporter sends at once, by default.
IN_FLIGHT = 4
#: Log lines kept while the server is unreachable; older ones are dropped past this.
MAX_BUFFERED_LINES = 10_000
#: The server's limits on a log batch.
MAX_LINES_PER_POST = wire.MAX_LOG_LINES_PER_BATCH
MAX_LINE_CHARS = wire.MAX_LOG_LINE_CHARS


class HttpReporter:
    """Reporter for one run, posting to ``/api/v1/runs/<run_id>/metrics/`` and ``logs/``.

    Use as a context manager (or call :meth:`start` and :meth:`close`): leaving it flushes
    everything, waiting up to ``final_flush_s`` for the server. Log lines are numbered from
    ``first_seq`` (the ranks of a distributed run share its log, each in its own range).
    ``in_flight``: metric batches sent at once (1: one after the other).
    """

    def __init__(self, client: ControlPlane, run_id: str, job: RunningJob, spool: Spool, *,
                 flush_interval_s: float = 0.5, batch_size: int = 200,
                 give_up_after_s: float = 8.0, final_flush_s: float = 30.0,
                 first_seq: int = 0, in_flight: int = IN_FLIGHT):
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self.client = client
        self.run_id = run_id
        self.job = job
        self.spool = spool
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.give_up_after_s = give_up_after_s
        self.final_flush_s = final_flush_s
        self.in_flight = in_flight
        self.delivered = 0  # points the server acknowledged
        self._start = time.perf_counter()
        self._lock = threading.Lock()
        self._points: list[dict] = []
        self._unsent: list[dict] = spool.points(run_id)  # left over from an earlier attempt
        self._lines: list[tuple[int, str]] = spool.lines(run_id)  # (seq, line), oldest first
        self._next_seq = self._lines[-1][0] + 1 if self._lines else first_seq
        self._lines_spooled = bool(self._lines)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"reporter-{run_id[:8]}", daemon=True)
        # The client keeps one session (connection) per thread: one per batch in flight.
        self._senders = ThreadPoolExecutor(max_workers=in_flight,
                                           thread_name_prefix=f"reporter-{run_id[:8]}-send")

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
            self._lines.extend(enumerate(lines, start=self._next_seq))
            self._next_seq += len(lines)
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
        try:
            self._flush(self.final_flush_s, stop=None)
        finally:
            self._senders.shutdown(wait=True)
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
        """Send ``points`` in batches, up to ``in_flight`` at once; full batches buffered while
        they are in flight join them. Once a batch cannot be delivered, no new one is sent:
        those in flight are waited for, and every point not acknowledged is kept, in order, in
        ``_unsent`` and the spool."""
        had_spool = bool(self._unsent)
        waiting = [points[start:start + self.batch_size]
                   for start in range(0, len(points), self.batch_size)]  # oldest first
        unacknowledged: dict[int, list[dict]] = dict(enumerate(waiting))
        window: dict[Future, int] = {}
        sent, failed = 0, False
        joins_until = time.monotonic() + self.flush_interval_s
        while True:
            while not failed and sent < len(waiting) and len(window) < self.in_flight:
                window[self._senders.submit(self._post_batch, waiting[sent], give_up_after_s,
                                            stop)] = sent
                sent += 1
            if not window:
                break
            done, _ = wait(window, return_when=FIRST_COMPLETED)
            for future in done:
                index = window.pop(future)
                try:
                    answer = future.result()
                except Retryable as exc:
                    failed = True  # kept in unacknowledged
                    log.warning("control plane unavailable (%s)", exc)
                    continue
                except Rejected as exc:
                    # A 4xx will not change on retry; say so loudly rather than loop forever.
                    log.error("server refused %d points of run %s: %s",
                              len(waiting[index]), self.run_id, exc)
                except Exception:  # noqa: BLE001  (kept and spooled like any undelivered batch)
                    failed = True
                    log.exception("sending points of run %s failed", self.run_id)
                    continue
                else:
                    self.delivered += int(answer.get("accepted", len(waiting[index])))
                    if answer.get("cancelled"):
                        self.job.cancelled.set()
                del unacknowledged[index]
                waiting[index] = []  # answered: let it go
            # Full batches that arrived meanwhile join, for one flush interval: then the flush
            # ends, so log lines are not held back by a method that reports without pause.
            if (not failed and (stop is None or not stop.is_set())
                    and time.monotonic() < joins_until):
                for chunk in self._full_batches():
                    unacknowledged[len(waiting)] = chunk
                    waiting.append(chunk)
        self._unsent = [point for index in sorted(unacknowledged)
                        for point in unacknowledged[index]]
        if self._unsent:
            self.spool.replace_points(self.run_id, self._unsent)
            log.warning("%d points of run %s kept in the spool", len(self._unsent), self.run_id)
        elif had_spool:
            self.spool.replace_points(self.run_id, [])

    def _post_batch(self, chunk: list[dict], give_up_after_s: float,
                    stop: threading.Event | None) -> dict:
        """One batch, retried with backoff (on a sender thread)."""
        return with_backoff(lambda: self.client.post_metrics(self.run_id, chunk),
                            give_up_after_s=give_up_after_s, stop=stop,
                            what=f"metrics of run {self.run_id}")

    def _full_batches(self) -> list[list[dict]]:
        """Whole batches of the buffer, taken out of it (a partial one waits for its flush)."""
        with self._lock:
            whole = len(self._points) - len(self._points) % self.batch_size
            if not whole:
                return []
            taken, self._points = self._points[:whole], self._points[whole:]
        return [taken[start:start + self.batch_size] for start in range(0, whole, self.batch_size)]

    def _send_lines(self, lines: list[tuple[int, str]], give_up_after_s: float,
                    stop: threading.Event | None) -> None:
        for start, chunk in consecutive_batches(lines, MAX_LINES_PER_POST):
            first_seq = chunk[0][0]
            texts = [line for _, line in chunk]
            try:
                with_backoff(lambda: self.client.post_logs(self.run_id, first_seq, texts),
                             give_up_after_s=give_up_after_s, stop=stop, what="log lines")
            except Retryable:
                with self._lock:  # keep them, in order, ahead of newer lines
                    self._lines[:0] = lines[start:]
                    del self._lines[:-MAX_BUFFERED_LINES]
                    pending = list(self._lines)
                self.spool.replace_lines(self.run_id, pending)
                self._lines_spooled = True
                return
            except Rejected as exc:
                log.error("server refused %d log lines of run %s: %s", len(chunk), self.run_id, exc)
        if self._lines_spooled:
            self.spool.replace_lines(self.run_id, [])
            self._lines_spooled = False


def consecutive_batches(lines: list[tuple[int, str]], size: int
                        ) -> Iterator[tuple[int, list[tuple[int, str]]]]:
    """``(index in lines, batch)``: at most ``size`` ``(seq, line)`` pairs whose numbers follow
    each other, as one ``first_seq`` + lines post carries them."""
    start = 0
    while start < len(lines):
        end = start + 1
        while (end < len(lines) and end - start < size
               and lines[end][0] == lines[end - 1][0] + 1):
            end += 1
        yield start, lines[start:end]
        start = end
