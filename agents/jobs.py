"""One job on an agent: claim it, run its method from ``ml/`` with an HttpReporter, report the end.

States sent to ``finish/``: ``succeeded`` (the method returned), ``cancelled`` (the user
cancelled: the method raised :class:`ml.reporting.Cancelled`), ``failed`` (any error, or the
agent was stopped mid-job) with the error text; the traceback goes to the run's log.
"""
from __future__ import annotations

import json
import logging
import traceback

from agents.client import Conflict, ControlPlane, Rejected, Retryable
from agents.provenance import agent_provenance
from agents.reporter import HttpReporter
from agents.retry import with_backoff
from agents.spool import Spool
from agents.tracker import JobTracker

log = logging.getLogger(__name__)


class JobRunner:
    """Runs jobs one at a time for the Celery task ``estuary.run_job``."""

    def __init__(self, client: ControlPlane, tracker: JobTracker, spool: Spool, *,
                 flush_interval_s: float = 0.5, batch_size: int = 200,
                 finish_patience_s: float = 60.0):
        self.client = client
        self.tracker = tracker
        self.spool = spool
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.finish_patience_s = finish_patience_s

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
            reporter = HttpReporter(self.client, job.run_id, job, self.spool,
                                    flush_interval_s=self.flush_interval_s,
                                    batch_size=self.batch_size)
            with reporter:
                state, error, result = self._execute(spec, reporter)
            self._finish(job_id, job.run_id, state, error, result, all_sent=reporter.unsent == 0)
            return state
        finally:
            self.tracker.end(job_id)

    def _execute(self, spec: dict, reporter: HttpReporter) -> tuple[str, str, dict]:
        """Build the method from the registry and run it; never raises."""
        from ml import registry  # imported here: torch is heavy, and the daemon preloads it
        from ml.reporting import Cancelled

        job = reporter.job
        method_name = spec.get("method", "")
        try:
            method = registry.get(method_name)
            config = method.parse_config(spec.get("config") or {})
            # The config itself is on the experiment page, as a table.
            reporter.log(f"{method_name} starting on this agent "
                         f"(seed {getattr(config, 'seed', '?')})")
            result = method.run(config, reporter)
            json.dumps(result)  # the finish body must be JSON; fail here, not in requests
        except Cancelled:
            if job.cancelled.is_set():
                reporter.log("cancelled")
                return "cancelled", "", {}
            reporter.log("stopped: the agent is shutting down")
            return "failed", "the agent was stopped before the job finished", {}
        except registry.UnknownMethod:
            return "failed", f"unknown method {method_name!r} on this agent", {}
        except Exception as exc:
            reporter.log(traceback.format_exc())
            return "failed", f"{type(exc).__name__}: {exc}"[:2000], {}
        if job.cancelled.is_set():
            # Cancelled after the last round was reported: the server already counts it so.
            return "cancelled", "", result
        reporter.log(f"{method_name} finished")
        return "succeeded", "", result

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
