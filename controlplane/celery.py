"""The control plane's Celery app.

It sends ``estuary.run_job`` to each agent's own queue (``device.<id>``) and runs the control
plane's periodic tasks on queue ``controlplane``::

    celery -A controlplane worker -Q controlplane
    celery -A controlplane beat        # exactly one, as its own process (never worker -B)

All configuration lives in settings.py under the ``CELERY_`` prefix: JSON only, late acks,
prefetch 1, the reaper's beat schedule.
"""
import os

from celery import Celery

from ml import wire

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

#: The task each agent's worker defines (in agents/); only its name travels here.
RUN_JOB_TASK = wire.RUN_JOB_TASK


def device_queue(device_id: object) -> str:
    """The Celery queue an agent consumes: one per device."""
    return f"device.{device_id}"
