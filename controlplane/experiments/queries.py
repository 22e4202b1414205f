"""Who may see which experiments, runs and jobs: one helper per access rule."""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import connection
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
    alike). One query on the device's jobs of the run (the rule of :func:`jobs_for_device`),
    in raw SQL: building it with the ORM cost more than running it (issue #20)."""
    job_table, run_table = Job._meta.db_table, Run._meta.db_table
    uuid_field = Job._meta.get_field("run")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT run.experiment_id, job.state FROM {job_table} job "
            f"JOIN {run_table} run ON run.id = job.run_id "
            f"WHERE job.device_id = %s AND job.run_id = %s",
            [uuid_field.get_db_prep_value(device.pk, connection),
             uuid_field.get_db_prep_value(run_id, connection)])
        jobs = cursor.fetchall()
    if not jobs:
        return None
    return HostedRun(id=run_id, experiment_id=uuid.UUID(str(jobs[0][0])),
                     stopped=all(state in FINISHED_STATES for _, state in jobs))
