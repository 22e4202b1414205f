"""Handing a job to its agent: one Celery message on the device's own queue."""
from __future__ import annotations

import uuid

from controlplane.celery import RUN_JOB_TASK, app, device_queue


def send_job(job_id: uuid.UUID, task_id: str, device_id: uuid.UUID) -> None:
    """Send ``estuary.run_job(job_id=...)`` to queue ``device.<device_id>``; raises whatever
    the broker raises.

    Only the id travels: the agent fetches the config from ``start/``.
    """
    app.send_task(RUN_JOB_TASK, kwargs={"job_id": str(job_id)},
                  queue=device_queue(device_id), task_id=task_id)
