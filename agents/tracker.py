"""Which jobs this agent is running, and the flag that tells each one to stop.

The heartbeat thread reads :meth:`JobTracker.running` and applies the server's ``cancel_jobs``;
a job's reporter polls :meth:`RunningJob.should_stop`. A daemon shutdown stops every job too.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class RunningJob:
    """One job in progress on this agent."""

    job_id: str
    run_id: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    shutdown: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.shutdown.is_set()


class JobTracker:
    """Thread-safe registry of running jobs, shared by the worker and the heartbeat thread."""

    def __init__(self, shutdown: threading.Event):
        self.shutdown = shutdown
        self._lock = threading.Lock()
        self._jobs: dict[str, RunningJob] = {}

    def begin(self, job_id: str) -> RunningJob:
        job = RunningJob(job_id, shutdown=self.shutdown)
        with self._lock:
            self._jobs[job_id] = job
        return job

    def end(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def running(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def active_runs(self) -> set[str]:
        """Run ids whose reporter is alive (their spool belongs to it, not to the resender)."""
        with self._lock:
            return {job.run_id for job in self._jobs.values() if job.run_id}

    def cancel(self, job_ids: list[str]) -> list[str]:
        """Flag the given jobs as cancelled; returns those that were running here."""
        hit = []
        with self._lock:
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is not None:
                    job.cancelled.set()
                    hit.append(job_id)
        return hit
