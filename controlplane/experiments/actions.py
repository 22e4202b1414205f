"""State changes of experiments, runs and jobs (Zulip style: one transaction per action).

Tasks and live events leave only on commit, so nothing is dispatched or published for a change
that rolled back. Arguments are validated by the serializers; actions trust them.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from controlplane.devices.models import Device, offline_cutoff
from controlplane.errors import Conflict
from controlplane.experiments.dispatch import dispatch_job
from controlplane.experiments.models import FINISHED_STATES, Experiment, Job, JobState, Run
from controlplane.experiments.events import run_event
from controlplane.metrics.events import publish_on_commit


@dataclass(frozen=True)
class PlannedRun:
    """One method of an experiment with its config, validated by that method's schema."""

    method: str
    config: dict[str, Any]


@dataclass(frozen=True)
class ExperimentPlan:
    """A validated experiment, ready to store and dispatch."""

    name: str
    algorithm: str
    config: dict[str, Any]
    runs: list[PlannedRun]
    testbed: str | list[dict[str, Any]]
    seed: int
    host: Device


@transaction.atomic
def create_experiment(owner, plan: ExperimentPlan) -> Experiment:
    """Store the experiment with one run and one job per method; dispatch the jobs on commit."""
    experiment = Experiment.objects.create(
        owner=owner, name=plan.name, algorithm=plan.algorithm, config=plan.config,
        methods=[run.method for run in plan.runs], testbed=plan.testbed, seed=plan.seed)
    for position, planned in enumerate(plan.runs):
        run = Run.objects.create(experiment=experiment, position=position,
                                 method=planned.method, config=planned.config)
        job = Job.objects.create(run=run, device=plan.host, celery_task_id=str(uuid.uuid4()))
        transaction.on_commit(partial(dispatch_job, job.id, job.celery_task_id, plan.host.id))
    return experiment


def _set_state(job: Job, state: str, now: datetime, error: str = "",
               result: dict[str, Any] | None = None) -> None:
    """Move a (locked) job and its run to ``state``; publish the run on commit."""
    run = job.run
    job.state = run.state = state
    if state == JobState.RUNNING:
        job.started_at = run.started_at = now
    else:
        job.finished_at = run.finished_at = now
        job.error = run.error = error
    if result is not None:
        run.result = result
    job.save()
    run.save()
    refresh_experiment_status(run.experiment_id)
    publish_on_commit(run.experiment_id, partial(run_event, run.id))


def refresh_experiment_status(experiment_id: uuid.UUID) -> Experiment:
    """Derive the experiment's status from its jobs (see docs/architecture.md)."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment_id)
    states = set(Job.objects.filter(run__experiment_id=experiment_id)
                 .values_list("state", flat=True))
    if states & {JobState.QUEUED, JobState.RUNNING}:
        status = Experiment.Status.RUNNING
    elif states == {JobState.SUCCEEDED}:
        status = Experiment.Status.SUCCEEDED
    elif JobState.CANCELLED in states:
        status = Experiment.Status.CANCELLED
    else:
        status = Experiment.Status.FAILED
    if status != experiment.status:
        experiment.status = status
        experiment.finished_at = None if status == Experiment.Status.RUNNING else timezone.now()
        experiment.save(update_fields=["status", "finished_at", "updated"])
    return experiment


@transaction.atomic
def cancel_experiment(experiment: Experiment) -> int:
    """Cancel every queued or running job; returns how many. Agents learn it from their next
    heartbeat or metrics post and stop within a round."""
    now = timezone.now()
    jobs = (Job.objects.select_for_update().select_related("run")
            .filter(run__experiment=experiment, state__in=[JobState.QUEUED, JobState.RUNNING]))
    jobs = list(jobs)
    for job in jobs:
        _set_state(job, JobState.CANCELLED, now, error="Cancelled by its owner.")
    return len(jobs)


def _locked(job: Job) -> Job:
    return Job.objects.select_for_update().select_related("run").get(pk=job.pk)


@transaction.atomic
def start_job(job: Job) -> Job:
    """The hosting agent begins a job; 409 unless it is still queued (e.g. cancelled)."""
    job = _locked(job)
    if job.state != JobState.QUEUED:
        raise Conflict(f"The job is {job.state}, not queued: do not run it.")
    _set_state(job, JobState.RUNNING, timezone.now())
    return job


@transaction.atomic
def finish_job(job: Job, state: str, error: str, result: dict[str, Any]) -> Job:
    """The hosting agent reports the end of a job.

    A cancelled job stays cancelled (the agent is confirming it stopped) but keeps the partial
    result it sends; any other state than running is a 409.
    """
    job = _locked(job)
    if job.state == JobState.CANCELLED:
        job.run.result = result
        job.run.save(update_fields=["result"])
        return job
    if job.state != JobState.RUNNING:
        raise Conflict(f"The job is {job.state}, not running.")
    _set_state(job, state, timezone.now(), error=error, result=result)
    return job


def fail_jobs(jobs: QuerySet[Job], error: str) -> list[uuid.UUID]:
    """Fail the given unfinished jobs with ``error`` (inside the caller's transaction)."""
    now = timezone.now()
    failed = []
    for job in jobs.select_for_update().select_related("run").exclude(state__in=FINISHED_STATES):
        _set_state(job, JobState.FAILED, now, error=error)
        failed.append(job.id)
    return failed


@transaction.atomic
def reap_stale_jobs() -> list[uuid.UUID]:
    """Fail the unfinished jobs whose device missed its heartbeats; returns their ids.

    A running job's agent is presumed dead; a queued job would never start. If the agent comes
    back, the server tells it to stop (heartbeat ``cancel_jobs``, 409 on start).
    """
    cutoff = offline_cutoff()
    stale = (Job.objects.exclude(state__in=FINISHED_STATES)
             .filter(Q(device__isnull=True) | Q(device__last_seen__lt=cutoff)
                     | Q(device__last_seen__isnull=True))
             .select_related("device"))
    failed = []
    for job in stale:
        failed += fail_jobs(Job.objects.filter(pk=job.pk), _silence_error(job))
    return failed


def _silence_error(job: Job) -> str:
    missed = settings.ESTUARY["MISSED_HEARTBEATS"]
    if job.device is None:
        return "The hosting device was deleted."
    seen = job.device.last_seen.isoformat() if job.device.last_seen else "never"
    if job.state == JobState.RUNNING:
        return (f"Device {job.device.name} missed {missed} heartbeats (last seen {seen}); "
                "its agent is presumed dead and the job failed.")
    return (f"Device {job.device.name} went offline (last seen {seen}) before the job started.")
