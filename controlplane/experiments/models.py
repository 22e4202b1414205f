"""Experiment (a method and its baselines on one testbed), Run (one method) and Job."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


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

    class Meta:
        ordering = ["experiment", "position"]
        constraints = [models.UniqueConstraint(fields=["experiment", "position"],
                                               name="run_position_unique")]

    def __str__(self) -> str:
        return f"{self.experiment} / {self.method}"


class Job(models.Model):
    """A run handed to the agent of one device through its Celery queue."""

    State = JobState

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="job")
    # Kept when the device is deleted, so the history stays readable.
    device = models.ForeignKey("devices.Device", on_delete=models.SET_NULL, null=True,
                               related_name="jobs")
    celery_task_id = models.CharField(max_length=36, blank=True)
    state = models.CharField(max_length=9, choices=JobState.choices, default=JobState.QUEUED)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The latest start or heartbeat in which its device said it runs the job: a running job
    # its device stops listing is reconciled (failed) by the reaper.
    listed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["queued_at"]
        indexes = [models.Index(fields=["device", "state"])]

    def __str__(self) -> str:
        return f"job {self.id} ({self.state})"
