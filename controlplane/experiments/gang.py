"""Gang scheduling of distributed runs: all of a run's devices at once, or none.

A distributed run's jobs are created held back (``dispatched_at`` null). The allocator sends
them all when every placed device is free (no other job queued on it or running there), so no
run ever holds part of its devices: two runs cannot deadlock on each other's. Until then the
run records which devices it waits for (``Run.waiting_for``). Devices are locked (``SELECT ...
FOR UPDATE``, in id order) while they are checked and taken, so two allocators cannot
double-book one. Oldest runs are tried first; a younger run whose devices are free does not
wait behind an older one that cannot start, unless that one has waited longer than
``ESTUARY_GANG_RESERVE_AFTER_S``: then its devices are reserved for it, so a run needing many
devices is not overtaken forever by runs needing few (runs it does not touch still start).
Emulated jobs are queued on their host at once and are not held back by a reservation.

An offline device does not hold a gang back: it is allocated like a free one and, if its agent
does not claim its job within the claim deadline, the run fails naming it
(:func:`controlplane.experiments.actions.fail_unclaimed_gang_jobs`).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from functools import partial
from typing import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.devices.models import Device
from controlplane.experiments.events import run_event
from controlplane.experiments.models import Job, JobState, Run
from controlplane.metrics.events import publish_on_commit

#: Jobs that occupy their device: sent to its queue and not finished.
OCCUPYING = Q(state=JobState.RUNNING) | Q(state=JobState.QUEUED, dispatched_at__isnull=False)


def waiting_runs() -> list[tuple[uuid.UUID, datetime]]:
    """Distributed runs whose gang is not allocated yet, oldest first, with when they were
    created."""
    return list(Run.objects.filter(state=JobState.QUEUED, allocated_at__isnull=True,
                                   experiment__execution="distributed")
                .order_by("experiment__created", "position")
                .values_list("id", "experiment__created"))


#: Sends one job to its device's queue: ``dispatch(job_id, task_id, device_id)``.
Dispatch = Callable[[uuid.UUID, str, uuid.UUID], None]


def allocate_waiting_runs(dispatch: Dispatch) -> list[uuid.UUID]:
    """Try every waiting run, oldest first; returns those allocated now (their jobs go to
    ``dispatch`` once the allocation committed). The devices of a run that has waited longer
    than the reservation patience are reserved for it against the younger runs."""
    patience = timedelta(seconds=settings.ESTUARY["GANG_RESERVE_AFTER_S"])
    now = timezone.now()
    reserved: dict[uuid.UUID, str] = {}
    allocated = []
    for run_id, created in waiting_runs():
        if try_allocate(run_id, dispatch, reserved):
            allocated.append(run_id)
        elif now - created >= patience:
            for device_id in Job.objects.filter(run_id=run_id, device_id__isnull=False) \
                    .values_list("device_id", flat=True):
                reserved.setdefault(device_id, f"reserved for an older run waiting since "
                                               f"{created:%H:%M:%S} UTC")
    return allocated


@transaction.atomic
def try_allocate(run_id: uuid.UUID, dispatch: Dispatch,
                 reserved: dict[uuid.UUID, str] | None = None) -> bool:
    """Allocate run ``run_id``'s devices and send its jobs if all are free and none is in
    ``reserved`` (device id -> why); else record which devices it waits for and why. Returns
    whether it was allocated."""
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
    why = {pk: "busy with another job" for pk in busy}
    for pk in device_ids:
        if reserved and pk in reserved and pk not in why:
            why[pk] = reserved[pk]
    if why:
        waiting = [{"device": str(pk), "name": devices[pk].name, "why": why[pk]}
                   for pk in sorted(why, key=str)]
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
