"""Who may see which experiments, runs and jobs: one helper per access rule."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db.models import QuerySet

from controlplane.devices.models import Device
from controlplane.experiments.models import FINISHED_STATES, Experiment, Job, Run


def experiments_for(user) -> QuerySet[Experiment]:
    """The experiments ``user`` owns."""
    if not user.is_authenticated:
        return Experiment.objects.none()
    return Experiment.objects.filter(owner=user)


def runs_for(user) -> QuerySet[Run]:
    """The runs of the experiments ``user`` owns."""
    if not user.is_authenticated:
        return Run.objects.none()
    return Run.objects.filter(experiment__owner=user)


def jobs_for_device(device: Device) -> QuerySet[Job]:
    """The jobs ``device`` hosts: the only ones its agent may start, finish or report on."""
    return Job.objects.filter(device=device)


@dataclass(frozen=True)
class HostedRun:
    """A run as the device reporting on it sees it: what ingestion needs, read in one query."""

    id: uuid.UUID
    experiment_id: uuid.UUID
    #: Every job of the device on this run is finished: its agent should stop.
    stopped: bool


def hosted_run(device: Device, run_id: uuid.UUID) -> HostedRun | None:
    """The run ``run_id`` if ``device`` hosts a job of it, else None (missing or not its own
    alike). One query on the device's jobs of the run, not a Run, a join and an exists()
    (issue #20's profile of ingestion)."""
    jobs = list(jobs_for_device(device).filter(run_id=run_id)
                .values_list("run__experiment_id", "state"))
    if not jobs:
        return None
    return HostedRun(id=run_id, experiment_id=jobs[0][0],
                     stopped=all(state in FINISHED_STATES for _, state in jobs))
