"""Gang scheduling of distributed runs: all of a run's devices at once, or none.

A distributed run's jobs are created held back (``dispatched_at`` null). The allocator sends
them all when every placed device is free (no other job queued on it or running there), so no
run ever holds part of its devices: two runs cannot deadlock on each other's. Until then the
run records which devices it waits for (``Run.waiting_for``). Devices are locked (``SELECT ...
FOR UPDATE``, in id order) while they are checked and taken, so two allocators cannot
double-book one. Oldest runs are tried first; a younger run whose devices are free does not
wait behind an older one that cannot start.

An offline device does not hold a gang back: it is allocated like a free one and, if its agent
does not claim its job within the claim deadline, the run fails naming it
(:func:`controlplane.experiments.actions.fail_unclaimed_gang_jobs`).
"""
from __future__ import annotations

import uuid
from functools import partial
from typing import Callable

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.devices.models import Device
from controlplane.experiments.events import run_event
from controlplane.experiments.models import Job, JobState, Run
from controlplane.metrics.events import publish_on_commit

#: Jobs that occupy their device: sent to its queue and not finished.
OCCUPYING = Q(state=JobState.RUNNING) | Q(state=JobState.QUEUED, dispatched_at__isnull=False)


def waiting_runs() -> list[uuid.UUID]:
    """Distributed runs whose gang is not allocated yet, oldest first."""
    return list(Run.objects.filter(state=JobState.QUEUED, allocated_at__isnull=True,
                                   experiment__execution="distributed")
                .order_by("experiment__created", "position").values_list("id", flat=True))


#: Sends one job to its device's queue: ``dispatch(job_id, task_id, device_id)``.
Dispatch = Callable[[uuid.UUID, str, uuid.UUID], None]


def allocate_waiting_runs(dispatch: Dispatch) -> list[uuid.UUID]:
    """Try every waiting run; returns those allocated now (their jobs go to ``dispatch`` once
    the allocation committed)."""
    return [run_id for run_id in waiting_runs() if try_allocate(run_id, dispatch)]


@transaction.atomic
def try_allocate(run_id: uuid.UUID, dispatch: Dispatch) -> bool:
    """Allocate run ``run_id``'s devices and send its jobs if all are free; else record which
    devices it waits for. Returns whether it was allocated."""
    run = (Run.objects.select_for_update()
           .filter(pk=run_id, state=JobState.QUEUED, allocated_at__isnull=True).first())
    if run is None:
        return False
    jobs = list(run.jobs.select_for_update().filter(state=JobState.QUEUED).order_by("rank"))
    device_ids = sorted({job.device_id for job in jobs if job.device_id is not None})
    devices = {device.pk: device for device in
               Device.objects.select_for_update().filter(pk__in=device_ids).order_by("pk")}
    busy = set(Job.objects.filter(OCCUPYING, device_id__in=device_ids).exclude(run=run)
               .values_list("device_id", flat=True))
    if busy:
        waiting = [{"device": str(pk), "name": devices[pk].name,
                    "why": "busy with another job"} for pk in sorted(busy, key=str)]
        if waiting != run.waiting_for:
            run.waiting_for = waiting
            run.save(update_fields=["waiting_for"])
            publish_on_commit(run.experiment_id, partial(run_event, run.id))
        return False
    now = timezone.now()
    run.allocated_at, run.waiting_for = now, []
    run.save(update_fields=["allocated_at", "waiting_for"])
    for job in jobs:
        job.dispatched_at = now
        job.save(update_fields=["dispatched_at"])
        transaction.on_commit(partial(dispatch, job.id, job.celery_task_id, job.device_id))
    publish_on_commit(run.experiment_id, partial(run_event, run.id))
    return True
