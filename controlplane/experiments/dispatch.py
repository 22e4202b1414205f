"""Handing a job to its agent: one Celery message on the device's own queue."""
from __future__ import annotations

import logging
import uuid

from django.db import transaction

from controlplane.celery import RUN_JOB_TASK, app, device_queue
from controlplane.experiments.models import Job

log = logging.getLogger(__name__)


def dispatch_job(job_id: uuid.UUID, task_id: str, device_id: uuid.UUID) -> None:
    """Send ``estuary.run_job(job_id=...)`` to queue ``device.<device_id>``.

    Runs after the creating transaction committed (so the agent finds the job when it asks).
    Only the id travels: the agent fetches the config from ``start/``. If the broker is
    unreachable, the job fails with that error instead of staying queued forever.
    """
    try:
        app.send_task(RUN_JOB_TASK, kwargs={"job_id": str(job_id)},
                      queue=device_queue(device_id), task_id=task_id)
    except Exception as exc:  # noqa: BLE001  (any broker failure must surface on the job)
        log.exception("could not dispatch job %s", job_id)
        from controlplane.experiments.actions import fail_jobs  # (actions import this module)

        with transaction.atomic():
            fail_jobs(Job.objects.filter(pk=job_id), f"Could not dispatch the job: {exc}")
