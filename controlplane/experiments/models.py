"""Experiment (a method and its baselines on one testbed), Run (one method) and Job."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Execution(models.TextChoices):
    """How an experiment's runs execute (docs/controlplane.md, Distributed runs)."""

    #: One job on one host agent emulates the whole testbed (the default).
    EMULATED = "emulated"
    #: Each role runs on its own device's agent (one job per rank, gang-scheduled).
    DISTRIBUTED = "distributed"


class Experiment(models.Model):
    """What a user launched: an algorithm, its validated config, baselines and testbed."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="experiments")
    name = models.CharField(max_length=200)
    algorithm = models.CharField(max_length=63)
    config = models.JSONField(help_text="The algorithm's config, validated by its schema")
    methods = models.JSONField(help_text="The algorithm, then each baseline")
    testbed = models.JSONField(help_text="A preset name or a list of device profiles")
    seed = models.PositiveIntegerField(default=0)
    execution = models.CharField(max_length=11, choices=Execution.choices,
                                 default=Execution.EMULATED)
    status = models.CharField(max_length=9, choices=Status.choices, default=Status.RUNNING)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Kept when the original is deleted: the rerun then stands on its own.
    rerun_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="reruns",
                                 help_text="The experiment this one reran, if any")

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["owner", "-created"])]

    def __str__(self) -> str:
        return self.name

    @property
    def runs_in_order(self) -> list["Run"]:
        """Its runs by position: the list ``Prefetch("runs", to_attr="listed_runs")`` left
        (a list costs no queryset per experiment, unlike a prefetched manager: issue #20),
        else its manager's."""
        listed = getattr(self, "listed_runs", None)
        return list(self.runs.all()) if listed is None else listed


class JobState(models.TextChoices):
    """queued → running → succeeded | failed | cancelled (a run mirrors its job)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: States a job never leaves.
FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Run(models.Model):
    """One method of an experiment, with the config validated for that method."""

    State = JobState

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    position = models.PositiveSmallIntegerField(help_text="0 for the algorithm, then baselines")
    method = models.CharField(max_length=63)
    config = models.JSONField()
    state = models.CharField(max_length=9, choices=JobState.choices, default=JobState.QUEUED)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    provenance = models.JSONField(
        default=dict, blank=True,
        help_text="What produced the run, recorded when its agent started it "
                  "(docs/controlplane.md, Provenance)")
    # Distributed runs only (empty for emulated ones).
    placement = models.JSONField(
        default=list, blank=True,
        help_text="One slot per rank (ml.distributed.Slot.as_dict()), rank 0 first")
    waiting_for = models.JSONField(
        default=list, blank=True,
        help_text="Devices a distributed run waits for before its gang is allocated: "
                  "[{device, name, why}]")
    allocated_at = models.DateTimeField(
        null=True, blank=True, help_text="When the gang's devices were allocated (jobs sent)")
    # Never shown to users or other devices: every store key of the run lives under it.
    rendezvous_prefix = models.CharField(max_length=64, blank=True)
    rendezvous_port = models.PositiveIntegerField(
        null=True, blank=True, help_text="The TCPStore port the coordinator's agent reported")

    class Meta:
        ordering = ["experiment", "position"]
        constraints = [models.UniqueConstraint(fields=["experiment", "position"],
                                               name="run_position_unique")]

    def __str__(self) -> str:
        return f"{self.experiment} / {self.method}"

    @property
    def all_jobs(self) -> list["Job"]:
        """Its jobs: the list ``Prefetch("jobs", to_attr="listed_jobs")`` left, else its
        (possibly prefetched) manager's."""
        listed = getattr(self, "listed_jobs", None)
        return list(self.jobs.all()) if listed is None else listed

    @property
    def jobs_by_rank(self) -> list["Job"]:
        """Its jobs, rank 0 first. Uses prefetched jobs."""
        return sorted(self.all_jobs, key=lambda job: job.rank)

    @property
    def job(self) -> "Job | None":
        """The coordinator's job (rank 0): an emulated run's only job. Uses prefetched jobs."""
        return next(iter(self.jobs_by_rank), None)

    @property
    def is_distributed(self) -> bool:
        return bool(self.placement)


class Job(models.Model):
    """One rank of a run handed to the agent of one device through its Celery queue (an
    emulated run has one job, rank 0)."""

    State = JobState

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="jobs")
    rank = models.PositiveSmallIntegerField(default=0, help_text="0: the coordinator")
    # Kept when the device is deleted, so the history stays readable.
    device = models.ForeignKey("devices.Device", on_delete=models.SET_NULL, null=True,
                               related_name="jobs")
    celery_task_id = models.CharField(max_length=36, blank=True)
    state = models.CharField(max_length=9, choices=JobState.choices, default=JobState.QUEUED)
    queued_at = models.DateTimeField(auto_now_add=True)
    # Null while the job is held back until its whole gang can be allocated.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The latest start or heartbeat in which its device said it runs the job: a running job
    # its device stops listing is reconciled (failed) by the reaper.
    listed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["queued_at", "rank"]
        indexes = [models.Index(fields=["device", "state"])]
        constraints = [models.UniqueConstraint(fields=["run", "rank"], name="job_rank_unique")]

    def __str__(self) -> str:
        return f"job {self.id} ({self.state})"


class ReadChange(models.Model):
    """One committed write that the list caches must see (controlplane.experiments.reads).

    Rows are appended by database triggers on experiments, runs, jobs and devices (migration
    0005), so every writer counts — views, Celery tasks, the reaper, the admin, raw SQL — and a
    row becomes visible exactly when its write commits. Appending takes no lock another writer
    waits on (a counter row would: every write transaction would hold it until its commit).
    """

    id = models.BigAutoField(primary_key=True)


class ReadChangeFold(models.Model):
    """The one row that :class:`ReadChange` rows are folded into: ``folded`` counts the rows
    deleted so far, so ``folded + count(ReadChange)`` only ever grows. ``epoch`` is drawn anew
    whenever the row is created: a database emptied and refilled (a test flush) never repeats
    an earlier version."""

    ROW = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=ROW)
    epoch = models.UUIDField(default=uuid.uuid4)
    folded = models.BigIntegerField(default=0)
