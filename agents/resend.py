"""Deliver what the spool holds: points first, then the finish reports that must follow them."""
from __future__ import annotations

import logging

from agents.client import Conflict, ControlPlane, Rejected, Retryable
from agents.reporter import consecutive_batches
from agents.retry import with_backoff
from agents.spool import Spool

log = logging.getLogger(__name__)


def resend_spool(client: ControlPlane, spool: Spool, busy_runs: set[str] = frozenset(),
                 batch_size: int = 200, give_up_after_s: float = 5.0) -> bool:
    """Send spooled points and log lines of runs not in ``busy_runs``, then pending finish
    reports.

    Returns True when the spool is empty afterwards (apart from busy runs). Stops at the first
    temporary failure: the server is down, the next call will try again.
    """
    for run_id in spool.runs_with_points():
        if run_id in busy_runs:
            continue
        points = spool.points(run_id)
        try:
            for start in range(0, len(points), batch_size):
                chunk = points[start:start + batch_size]
                with_backoff(lambda: client.post_metrics(run_id, chunk),
                             give_up_after_s=give_up_after_s, what="spooled metrics")
                spool.replace_points(run_id, points[start + batch_size:])
        except Retryable as exc:
            log.warning("spooled points of run %s not sent yet: %s", run_id, exc)
            return False
        except Rejected as exc:
            kept = spool.set_aside(run_id)
            log.error("server refused spooled points of run %s (%s); kept in %s", run_id, exc, kept)
            continue
        log.info("sent %d spooled points of run %s", len(points), run_id)

    for run_id in spool.runs_with_lines():
        if run_id in busy_runs:
            continue
        lines = spool.lines(run_id)
        try:
            for start, batch in consecutive_batches(lines, batch_size):
                first_seq, texts = batch[0][0], [line for _, line in batch]
                with_backoff(lambda: client.post_logs(run_id, first_seq, texts),
                             give_up_after_s=give_up_after_s, what="spooled log lines")
                spool.replace_lines(run_id, lines[start + len(batch):])
        except Retryable as exc:
            log.warning("spooled log lines of run %s not sent yet: %s", run_id, exc)
            return False
        except Rejected as exc:
            spool.replace_lines(run_id, [])
            log.error("server refused spooled log lines of run %s (%s); dropped", run_id, exc)

    waiting = set(spool.runs_with_points())
    for job_id, report in spool.finishes().items():
        if report.get("run_id") in waiting | set(busy_runs):
            continue  # its points go first
        try:
            with_backoff(lambda: client.finish_job(job_id, report["state"], report.get("error", ""),
                                                   report.get("result") or {}),
                         give_up_after_s=give_up_after_s, what="spooled finish")
        except Retryable as exc:
            log.warning("finish report of job %s not sent yet: %s", job_id, exc)
            return False
        except Conflict as exc:
            log.info("job %s was already closed by the server (%s)", job_id, exc)
        except Rejected as exc:
            log.error("server refused the finish report of job %s: %s", job_id, exc)
        spool.drop_finish(job_id)
    pending = set(spool.runs_with_points()) | set(spool.runs_with_lines())
    return not (pending - set(busy_runs)) and not spool.finishes()
