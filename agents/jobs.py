"""One job on an agent: claim it, run its method (or its rank's role of a distributed run) from
``ml/`` in a child process, forward what it reports to an HttpReporter, report the end.

States sent to ``finish/``: ``succeeded`` (the method returned), ``cancelled`` (the user
cancelled: the method raised :class:`ml.reporting.Cancelled`, or its child was stopped),
``failed`` (any error, a lost peer, or the agent was stopped mid-job) with the error text; the
traceback goes to the run's log.

A distributed job's rendezvous comes only from the control plane's answers to this device's
credential (``start/``, then ``rendezvous/`` for a worker until the coordinator's agent has
reported its store's port), and is checked before the role joins it.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from agents.child import RoleProcess
from agents.client import AgentError, Conflict, ControlPlane, Rejected, Retryable
from agents.provenance import agent_provenance
from agents.reporter import IN_FLIGHT, HttpReporter
from agents.retry import with_backoff
from agents.spool import Spool
from agents.tracker import JobTracker

log = logging.getLogger(__name__)

#: Log line numbers of rank r start at r * this (ranks of a run share its log).
LOG_SEQ_PER_RANK = 10**12


class RendezvousRefused(AgentError):
    """The rendezvous the control plane handed is not one this agent will join."""


def checked_rendezvous(found: Any, coordinator: bool) -> dict[str, Any]:
    """The rendezvous as ``ml.distributed.Rendezvous`` takes it, checked field by field."""
    if not isinstance(found, dict):
        raise RendezvousRefused(f"malformed rendezvous from the control plane: {found!r}")
    host, port = found.get("host"), found.get("port")
    prefix, timeout_s = found.get("prefix"), found.get("timeout_s")
    low = 0 if coordinator else 1
    if not isinstance(host, str) or not host or len(host) > 255:
        raise RendezvousRefused("the rendezvous has no host")
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        raise RendezvousRefused(f"the rendezvous port {port!r} is not a port")
    if not isinstance(prefix, str) or len(prefix) < 16:
        raise RendezvousRefused("the rendezvous has no secret prefix")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise RendezvousRefused(f"the rendezvous timeout {timeout_s!r} is not positive")
    return {"host": host, "port": port, "prefix": prefix, "timeout_s": float(timeout_s)}


class JobRunner:
    """Runs jobs one at a time for the Celery task ``estuary.run_job``, each in a child
    process (:mod:`agents.child`)."""

    def __init__(self, client: ControlPlane, tracker: JobTracker, spool: Spool, *,
                 flush_interval_s: float = 0.5, batch_size: int = 200,
                 finish_patience_s: float = 60.0, shape: bool = False,
                 rendezvous_patience_s: float = 300.0, in_flight: int = IN_FLIGHT):
        self.client = client
        self.in_flight = in_flight  # metric batches a run's reporter sends at once
        self.tracker = tracker
        self.spool = spool
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.finish_patience_s = finish_patience_s
        self.shape = shape
        self.rendezvous_patience_s = rendezvous_patience_s

    def run(self, job_id: str) -> str:
        """Run job ``job_id`` to its end; returns the state reported (or ``skipped``)."""
        job_id = str(job_id)
        job = self.tracker.begin(job_id)
        try:
            try:
                spec = with_backoff(lambda: self.client.start_job(job_id, agent_provenance()),
                                    give_up_after_s=self.finish_patience_s, stop=job.shutdown,
                                    what=f"start of job {job_id}")
            except Conflict as exc:
                log.info("job %s skipped: no longer queued (%s)", job_id, exc)
                return "skipped"
            except Rejected as exc:
                log.error("job %s refused by the server: %s", job_id, exc)
                return "skipped"
            job.run_id = str(spec["run_id"])
            rank = int(spec.get("rank") or 0)
            # Ranks share their run's log: each numbers its lines in its own range.
            reporter = HttpReporter(self.client, job.run_id, job, self.spool,
                                    flush_interval_s=self.flush_interval_s,
                                    batch_size=self.batch_size, first_seq=rank * LOG_SEQ_PER_RANK,
                                    in_flight=self.in_flight)
            with reporter:
                state, error, result = self._execute(job_id, spec, reporter)
            self._finish(job_id, job.run_id, state, error, result, all_sent=reporter.unsent == 0)
            return state
        finally:
            self.tracker.end(job_id)

    def _execute(self, job_id: str, spec: dict, reporter: HttpReporter) -> tuple[str, str, dict]:
        """Run the job's method (or distributed role) in a child process; never raises."""
        job = reporter.job
        rendezvous = None
        if spec.get("execution") == "distributed":
            try:
                rendezvous = self._rendezvous(job_id, spec, job)
            except RendezvousRefused as exc:
                reporter.log(str(exc))
                return "failed", str(exc), {}
            if rendezvous is None:
                return self._stopped(job, reporter, "before its rendezvous")
        try:
            role = RoleProcess(spec, rendezvous, shape=self.shape)
        except Exception as exc:  # noqa: BLE001  (e.g. the forkserver could not start)
            log.exception("could not start the role process of job %s", job_id)
            return "failed", f"could not start the role process: {exc}"[:2000], {}

        def forward(message: tuple) -> None:
            kind = message[0]
            if kind == "metric":
                reporter.metric(*message[1:])
            elif kind == "log":
                reporter.log(message[1])
            elif kind == "store_ready":
                self._report_port(job_id, int(message[1]), reporter)

        outcome = role.follow(forward, job.should_stop)
        log.info("role process %s of job %s ended (exit code %s%s)", role.process.pid, job_id,
                 role.exitcode, ", stopped by the agent" if job.should_stop() else "")
        if outcome is None:
            if job.should_stop():
                return self._stopped(job, reporter)
            error = f"the role process exited with code {role.exitcode} without an outcome"
            reporter.log(error)
            return "failed", error, {}
        if outcome.state == "cancelled":
            return self._stopped(job, reporter)
        if outcome.state == "succeeded" and job.cancelled.is_set():
            # Cancelled after the last round was reported: the server already counts it so.
            return "cancelled", "", outcome.result
        if outcome.state == "succeeded":
            reporter.log(f"{spec.get('method', '')} finished")
        return outcome.state, outcome.error, outcome.result

    @staticmethod
    def _stopped(job, reporter: HttpReporter, when: str = "before the job finished"
                 ) -> tuple[str, str, dict]:
        """The outcome of a job its agent stopped: cancelled by the user, or a shutdown."""
        if job.cancelled.is_set():
            reporter.log("cancelled")
            return "cancelled", "", {}
        reporter.log("stopped: the agent is shutting down")
        return "failed", f"the agent was stopped {when}", {}

    def _rendezvous(self, job_id: str, spec: dict, job) -> dict | None:
        """The rendezvous from ``start/``'s answer, or (a worker's, until the coordinator's
        agent reported its store) polled from ``rendezvous/``: only ever from the control
        plane, with this device's credential. None if the job stopped meanwhile."""
        found = spec.get("rendezvous")
        deadline = time.monotonic() + self.rendezvous_patience_s
        while found is None:
            if job.should_stop():
                return None
            if time.monotonic() > deadline:
                raise RendezvousRefused("the coordinator's agent never opened the run's store "
                                        f"(waited {self.rendezvous_patience_s:.0f} s)")
            try:
                found = self.client.rendezvous(job_id).get("rendezvous")
            except Conflict:
                return None  # the run ended (failed or cancelled) meanwhile
            except (Retryable, Rejected) as exc:
                log.warning("rendezvous of job %s not available yet: %s", job_id, exc)
            if found is None:
                job.cancelled.wait(0.5)
        return checked_rendezvous(found, coordinator=int(spec.get("rank") or 0) == 0)

    def _report_port(self, job_id: str, port: int, reporter: HttpReporter) -> None:
        try:
            with_backoff(lambda: self.client.report_store_port(job_id, port),
                         give_up_after_s=self.finish_patience_s, what="the store's port")
            reporter.log(f"the run's store listens on port {port}")
        except (Retryable, Rejected) as exc:
            reporter.log(f"could not report the store's port: {exc}")

    def _finish(self, job_id: str, run_id: str, state: str, error: str, result: dict,
                all_sent: bool) -> None:
        """Report the outcome; if points are still spooled or the server is down, spool it too."""
        report = {"run_id": run_id, "state": state, "error": error, "result": result}
        if all_sent:
            try:
                with_backoff(lambda: self.client.finish_job(job_id, state, error, result),
                             give_up_after_s=self.finish_patience_s, what=f"finish of job {job_id}")
                log.info("job %s %s", job_id, state)
                return
            except Conflict as exc:
                log.info("job %s was already closed by the server (%s)", job_id, exc)
                return
            except Rejected as exc:
                log.error("server refused the finish of job %s: %s", job_id, exc)
                return
            except Retryable as exc:
                log.warning("finish of job %s not delivered (%s); spooled", job_id, exc)
        self.spool.save_finish(job_id, report)
