"""Why a queued run waits: its place in its device's queue and what holds the device.

An agent runs one job at a time (concurrency 1, prefetch 1), in the order its queue received
them, so a queued job waits for every job queued before it on the same device and for the one
running there. A run waits through its first job by queue time, which holds whether it has one
job or one per rank.
"""
from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from controlplane.devices.models import offline_cutoff
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
    """The run's job (the first queued, when it has one per rank). Uses prefetched jobs."""
    return min(run.all_jobs, key=lambda job: (job.queued_at, job.id), default=None)


@dataclass
class DeviceQueue:
    """One device's queue as a request reads it: its queued jobs in queue order and the job
    running there (the first started), with its run and experiment."""

    queued: list[tuple[datetime, uuid.UUID]] = field(default_factory=list)
    running: Job | None = None


class QueueBoard:
    """Queue facts shared by every run of one response: the offline cutoff read once, and each
    device's queue read once for all the runs waiting in it (two queries for a whole page,
    whatever its number of runs and devices), not several queries per run (issue #20)."""

    def __init__(self) -> None:
        self._cutoff: datetime | None = None
        self._devices: dict[uuid.UUID, DeviceQueue] = {}

    def cutoff(self) -> datetime:
        """:func:`offline_cutoff`, read on first use."""
        if self._cutoff is None:
            self._cutoff = offline_cutoff()
        return self._cutoff

    def load(self, runs: Iterable[Run]) -> None:
        """Read the queues of the devices that ``runs`` wait on (those not read yet)."""
        wanted = set()
        for run in runs:
            job = _waiting_job(run)
            if job is not None and job.device_id not in self._devices:
                wanted.add(job.device_id)
        if not wanted:
            return
        queues = {device_id: DeviceQueue() for device_id in wanted}
        queued = (Job.objects.filter(device_id__in=wanted, state=JobState.QUEUED)
                  .order_by().values_list("device_id", "queued_at", "id"))
        for device_id, queued_at, job_id in queued:
            queues[device_id].queued.append((queued_at, job_id))
        for queue in queues.values():
            queue.queued.sort()  # bisect needs Python's order, whatever the database's collation
        running = (Job.objects.filter(device_id__in=wanted, state=JobState.RUNNING)
                   .select_related("run__experiment").order_by("started_at"))
        for job in running:
            if queues[job.device_id].running is None:
                queues[job.device_id].running = job
        self._devices.update(queues)

    def state(self, run: Run) -> QueueState | None:
        """The queue state of a queued run, or None when it is not waiting in a device's
        queue."""
        job = _waiting_job(run)
        if job is None:
            return None
        self.load([run])
        queue = self._devices[job.device_id]
        ahead = bisect.bisect_left(queue.queued, (job.queued_at, job.id))
        holder = ""
        if queue.running is not None:
            experiment = queue.running.run.experiment
            # Devices host only their owner's experiments; say less if that ever changes.
            holder = (f"{queue.running.run.method} of “{experiment.name}”"
                      if experiment.owner_id == run.experiment.owner_id
                      else "another user's job")
        return QueueState(device=job.device.name, position=ahead + 1,
                          queued=len(queue.queued), holder=holder,
                          device_detail=job.device.status_detail(self.cutoff()))

    def reason(self, run: Run) -> str:
        """Why a queued run waits, as a sentence ("" when it is not queued). A distributed run
        not yet allocated waits for its gang's devices (controlplane.experiments.gang)."""
        if run.state == JobState.QUEUED and run.waiting_for:
            return "Waiting for devices: " + ", ".join(
                f"{wait['name']} ({wait['why']})" for wait in run.waiting_for) + "."
        state = self.state(run)
        return state.sentence() if state else ""


def _waiting_job(run: Run) -> Job | None:
    """The job through which a queued run waits in a device's queue, else None."""
    if run.state != JobState.QUEUED:
        return None
    job = first_job(run)
    if job is None or job.state != JobState.QUEUED or job.device_id is None:
        return None
    return job


def queue_state(run: Run) -> QueueState | None:
    """The queue state of a queued run, or None when it is not waiting in a device's queue."""
    return QueueBoard().state(run)


def queue_reason(run: Run) -> str:
    """Why a queued run waits, as a sentence ("" when it is not queued); see
    :meth:`QueueBoard.reason` (a response with many runs shares one board)."""
    return QueueBoard().reason(run)
