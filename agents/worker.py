"""The agent's Celery worker: in-process, one job at a time, on the device's own queue only.

The control plane sends ``estuary.run_job(job_id=...)`` to ``device.<id>``. Messages are JSON;
tasks are acknowledged late (after the job ends), so a job whose agent dies is not silently
lost; the control plane's reaper fails it, and a redelivered message is skipped because
``start/`` answers 409. The daemon may stop a worker and start a new one in the same process
(see :mod:`agents.consumer_watch`).
"""
from __future__ import annotations

import logging
from typing import Callable

from celery import Celery
from celery.worker import state as worker_state

from agents.jobs import JobRunner

TASK_NAME = "estuary.run_job"


def build_app(broker_url: str, runner: JobRunner) -> Celery:
    """A Celery app that knows only ``estuary.run_job``, bound to ``runner``."""
    # No fixups: with DJANGO_SETTINGS_MODULE in the environment Celery would set up Django
    # (and its logging) inside the agent, which has no business with the control plane's DB.
    app = Celery("estuary-agent", broker=broker_url, set_as_current=False, fixups=[])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_enable_remote_control=False,  # cancellation comes with heartbeats
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name=TASK_NAME)
    def run_job(job_id: str) -> str:
        return runner.run(job_id)

    return app


def run_worker(app: Celery, queue: str, hostname: str, loglevel: int = logging.INFO,
               on_ready: Callable[..., None] | None = None) -> None:
    """Consume ``queue`` in this thread until :func:`request_stop` (blocks).

    ``on_ready`` is called once the worker consumes. A ``WorkController`` rather than
    ``app.Worker``: the latter installs Celery's own signal handlers, and the daemon has its
    own (stop the job, flush, then stop the worker).
    """
    worker_state.should_stop = None  # a fresh worker after an earlier one was stopped
    worker = app.WorkController(
        ready_callback=on_ready,
        hostname=hostname,
        queues=[queue],
        pool_cls="solo",
        concurrency=1,
        prefetch_multiplier=1,
        loglevel=loglevel,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        task_events=False,
    )
    worker.start()


def request_stop() -> None:
    """Ask the running worker to stop after the current task (safe from a signal handler)."""
    worker_state.should_stop = 0
