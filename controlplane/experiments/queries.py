"""Who may see which experiments, runs and jobs: one helper per access rule."""
from __future__ import annotations

from django.db.models import QuerySet

from controlplane.devices.models import Device
from controlplane.experiments.models import Experiment, Job, Run


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


def runs_hosted_by(device: Device) -> QuerySet[Run]:
    """The runs of which ``device`` hosts a job (a rank of a distributed run)."""
    return Run.objects.filter(jobs__device=device).distinct()
