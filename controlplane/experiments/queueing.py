"""Why a queued run waits: its place in its device's queue and what holds the device.

An agent runs one job at a time (concurrency 1, prefetch 1), in the order its queue received
them, so a queued job waits for every job queued before it on the same device and for the one
running there. Jobs are read through ``Job.objects.filter(run=...)`` (the first by queue time),
which holds whether a run has one job or one per rank.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q

from controlplane.experiments.models import Job, JobState, Run


@dataclass(frozen=True)
class QueueState:
    """Where a queued run stands: ``position`` (1 = next) among ``queued`` jobs of ``device``,
    the job that holds the device (its experiment and method, when the viewer owns it), and
    the device's own reason not to start anything (offline, not taking jobs)."""

    device: str
    position: int
    queued: int
    holder: str
    device_detail: str

    def sentence(self) -> str:
        parts = []
        if self.device_detail:
            parts.append(self.device_detail.rstrip("."))
        parts.append(f"Position {self.position} of {self.queued} in {self.device}'s queue")
        if self.holder:
            parts[-1] += f"; {self.device} is running {self.holder}"
        elif self.position > 1:
            parts[-1] += f"; {self.position - 1} job(s) ahead"
        return ". ".join(parts) + "."


def first_job(run: Run) -> Job | None:
    """The run's job (the first queued, when it has one per rank)."""
    return Job.objects.filter(run=run).select_related("device").order_by("queued_at", "id").first()


def queue_state(run: Run) -> QueueState | None:
    """The queue state of a queued run, or None when it is not waiting in a device's queue."""
    if run.state != JobState.QUEUED:
        return None
    job = first_job(run)
    if job is None or job.state != JobState.QUEUED or job.device is None:
        return None
    device = job.device
    queued = Job.objects.filter(device=device, state=JobState.QUEUED)
    ahead = queued.filter(Q(queued_at__lt=job.queued_at)
                          | Q(queued_at=job.queued_at, id__lt=job.id)).count()
    running = (Job.objects.filter(device=device, state=JobState.RUNNING)
               .select_related("run__experiment").order_by("started_at").first())
    holder = ""
    if running is not None:
        experiment = running.run.experiment
        # Devices host only their owner's experiments; say less if that ever changes.
        holder = (f"{running.run.method} of “{experiment.name}”"
                  if experiment.owner_id == run.experiment.owner_id else "another user's job")
    return QueueState(device=device.name, position=ahead + 1, queued=queued.count(),
                      holder=holder, device_detail=device.status_detail())


def queue_reason(run: Run) -> str:
    """Why a queued run waits, as a sentence ("" when it is not queued). A distributed run not
    yet allocated waits for its gang's devices (controlplane.experiments.gang)."""
    if run.state == JobState.QUEUED and run.waiting_for:
        return "Waiting for devices: " + ", ".join(
            f"{wait['name']} ({wait['why']})" for wait in run.waiting_for) + "."
    state = queue_state(run)
    return state.sentence() if state else ""
