"""The agent's Celery worker: in-process, one job at a time, on the device's own queue only.

The control plane sends ``estuary.run_job(job_id=...)`` to ``device.<id>``. Messages are JSON;
tasks are acknowledged late (after the job ends), so a job whose agent dies is not silently
lost; the control plane's reaper fails it, and a redelivered message is skipped because
``start/`` answers 409. The daemon may stop a worker and start a new one in the same process
(see :mod:`agents.consumer_watch`).

At the broker the agent logs in as its device's own Redis user, which reaches only keys named
after its queue (and kombu's binding sets of it): kombu's bookkeeping of unacknowledged messages
is therefore kept under the queue's name too (:func:`transport_options`), not in the ``unacked``
hash that every consumer shares by default.
"""
from __future__ import annotations

import logging
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from celery import Celery
from celery.worker import state as worker_state

from agents.jobs import JobRunner
from ml import wire

TASK_NAME = wire.RUN_JOB_TASK


def transport_options(queue: str) -> dict[str, str]:
    """kombu Redis transport options that keep the consumer's unacked messages under ``queue``."""
    return {"unacked_key": f"{queue}.unacked", "unacked_index_key": f"{queue}.unacked_index",
            "unacked_mutex_key": f"{queue}.unacked_mutex"}


def broker_url_via(address: str, device_url: str) -> str:
    """``device_url`` (with the device's own broker user) reached at another ``address``.

    ``address`` (the agent's ``--broker``) gives scheme, host, port, database and query; the
    user and password stay the device's: any other identity is refused.
    """
    override, device = urlsplit(address), urlsplit(device_url)
    if "@" in override.netloc:
        raise ValueError("--broker must not hold a user or password: the agent logs in as its "
                         "device's own broker user")
    userinfo = device.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{override.netloc}" if userinfo else override.netloc
    return urlunsplit(override._replace(netloc=netloc))


def build_app(broker_url: str, runner: JobRunner, queue: str) -> Celery:
    """A Celery app that knows only ``estuary.run_job``, bound to ``runner``, consuming
    ``queue`` as the device's broker user."""
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
        broker_transport_options=transport_options(queue),
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
