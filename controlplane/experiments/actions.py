"""State changes of experiments, runs and jobs (Zulip style: one transaction per action).

Tasks and live events leave only on commit, so nothing is dispatched or published for a change
that rolled back. Arguments are validated by the serializers; actions trust them.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from controlplane.devices.models import offline_cutoff
from controlplane.devices.queries import devices_for
from controlplane.errors import Conflict
from controlplane.experiments.dispatch import send_job
from controlplane.experiments.events import run_event
from controlplane.experiments.models import FINISHED_STATES, Experiment, Job, JobState, Run
from controlplane.experiments.plans import ExperimentPlan, PlannedRun
from controlplane.experiments.scheduling import choose_host
from controlplane.metrics.events import publish_on_commit

log = logging.getLogger(__name__)


@transaction.atomic
def create_experiment(owner, plan: ExperimentPlan, rerun_of: Experiment | None = None
                      ) -> Experiment:
    """Store the experiment with one run and one job per method; dispatch the jobs on commit."""
    experiment = Experiment.objects.create(
        owner=owner, name=plan.name, algorithm=plan.algorithm, config=plan.config,
        methods=[run.method for run in plan.runs], testbed=plan.testbed, seed=plan.seed,
        rerun_of=rerun_of)
    for position, planned in enumerate(plan.runs):
        run = Run.objects.create(experiment=experiment, position=position,
                                 method=planned.method, config=planned.config)
        job = Job.objects.create(run=run, device=plan.host, celery_task_id=str(uuid.uuid4()))
        transaction.on_commit(partial(dispatch_job, job.id, job.celery_task_id, plan.host.id))
    return experiment


def rerun_experiment(owner, original: Experiment) -> Experiment:
    """A new experiment with ``original``'s methods, configs, seed and testbed, on its host if
    that is still one of ``owner``'s online devices, else on the host the usual rule picks
    (the emulated testbed is in the config: the host changes wall times only)."""
    runs = list(original.runs.select_related("job__device").order_by("position"))
    previous = next((run.job.device for run in runs if hasattr(run, "job")), None)
    usable = previous is not None and devices_for(owner).filter(pk=previous.pk).exists() \
        and previous.is_online()
    plan = ExperimentPlan(
        name=f"{original.name} (rerun)"[:200], algorithm=original.algorithm,
        config=original.config, runs=[PlannedRun(run.method, run.config) for run in runs],
        testbed=original.testbed, seed=original.seed,
        host=choose_host(owner, previous.id if usable else None))
    return create_experiment(owner, plan, rerun_of=original)


def dispatch_job(job_id: uuid.UUID, task_id: str, device_id: uuid.UUID) -> None:
    """Send the job to its device's queue (after the creating transaction committed, so the
    agent finds the job when it asks). If the broker is unreachable, the job fails with that
    error instead of staying queued forever."""
    try:
        send_job(job_id, task_id, device_id)
    except Exception as exc:  # noqa: BLE001  (any broker failure must surface on the job)
        log.exception("could not dispatch job %s", job_id)
        fail_jobs(Job.objects.filter(pk=job_id), f"Could not dispatch the job: {exc}")


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


def run_provenance(job: Job, agent: dict[str, Any] | None) -> dict[str, Any]:
    """What produced ``job``'s run: the agent's code and package versions (``{}`` from an agent
    that does not send them), the hosting device's profile, the run's resolved config and seed."""
    device = job.device
    return {**(agent or {}),
            "device": None if device is None else {"id": str(device.id), "name": device.name,
                                                   "profile": device.testbed_entry()},
            "config": job.run.config, "seed": job.run.config.get("seed")}


@transaction.atomic
def start_job(job: Job, provenance: dict[str, Any] | None = None) -> Job:
    """The hosting agent begins a job; 409 unless it is still queued (e.g. cancelled).

    ``provenance`` is what the agent runs it with (:func:`run_provenance`). Idempotent for the
    hosting device (views only pass its own jobs): a retry of a start whose answer was lost
    finds the job running with nothing reported yet and gets the same spec.
    """
    job = _locked(job)
    if job.state == JobState.RUNNING and not job.run.points.exists():
        return job
    if job.state != JobState.QUEUED:
        raise Conflict(f"The job is {job.state}, not queued: do not run it.")
    now = timezone.now()
    job.listed_at = now  # a full window to show up in its device's heartbeats
    job.run.provenance = run_provenance(job, provenance)
    _set_state(job, JobState.RUNNING, now)
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
    """Fail those of ``jobs`` that are unfinished with ``error``; returns their ids.

    Each job is claimed in its own transaction by an UPDATE whose WHERE names only the job's
    own row (PostgreSQL re-checks such a condition after waiting for a concurrent writer; it
    would not re-check one on joined rows), so of two concurrent callers (two reapers) only
    one fails and publishes it, on PostgreSQL and SQLite alike.
    """
    now = timezone.now()
    unfinished = jobs.exclude(state__in=FINISHED_STATES)
    failed = []
    for job_id in list(unfinished.values_list("id", flat=True)):
        with transaction.atomic():
            if not unfinished.filter(pk=job_id).exists():
                continue  # no longer matching (e.g. its device heartbeated meanwhile)
            claim = Job.objects.filter(pk=job_id).exclude(state__in=FINISHED_STATES)
            if not claim.update(state=JobState.FAILED):
                continue  # finished meanwhile, by another reaper or its agent
            _set_state(_locked(Job(pk=job_id)), JobState.FAILED, now, error=error)
        failed.append(job_id)
    return failed


def reap_stale_jobs() -> list[uuid.UUID]:
    """Fail the unfinished jobs no agent is running any more; returns their ids.

    - A running or queued job whose device missed its heartbeats: the agent is presumed dead
      (a queued job would never start).
    - A running job whose device heartbeats but has not listed it for as long: its agent does
      not run it (e.g. the answer to its ``start/`` was lost and it gave up).
    Only heartbeats missed while a server accepted them count (:func:`offline_cutoff`). If the
    agent comes back, the server tells it to stop (heartbeat ``cancel_jobs``, 409 on start).
    Safe to run concurrently (see :func:`fail_jobs`).
    """
    cutoff = offline_cutoff()
    silent = (Q(device__isnull=True) | Q(device__last_seen__lt=cutoff)
              | Q(device__last_seen__isnull=True))
    unlisted = Q(listed_at__lt=cutoff) | Q(listed_at__isnull=True, started_at__lt=cutoff)
    failed = []
    for job in (Job.objects.filter(state=JobState.QUEUED).filter(silent)
                .select_related("device")):
        failed += fail_jobs(Job.objects.filter(pk=job.pk).filter(silent), _silence_error(job))
    for job in (Job.objects.filter(state=JobState.RUNNING).filter(silent | unlisted)
                .select_related("device")):
        still_stale = Job.objects.filter(pk=job.pk, state=JobState.RUNNING).filter(silent | unlisted)
        failed += fail_jobs(still_stale, _silence_error(job, cutoff))
    return failed


def _silence_error(job: Job, cutoff: datetime | None = None) -> str:
    missed = settings.ESTUARY["MISSED_HEARTBEATS"]
    if job.device is None:
        return "The hosting device was deleted."
    seen = job.device.last_seen.isoformat() if job.device.last_seen else "never"
    if job.state == JobState.QUEUED:
        return f"Device {job.device.name} went offline (last seen {seen}) before the job started."
    if job.device.last_seen is None or (cutoff is not None and job.device.last_seen < cutoff):
        return (f"Device {job.device.name} missed {missed} heartbeats (last seen {seen}); "
                "its agent is presumed dead and the job failed.")
    listed = (job.listed_at or job.started_at).isoformat()
    return (f"Device {job.device.name} is alive but its agent has not listed this job as "
            f"running in {missed} heartbeats (last listed {listed}); it is not running there, "
            "so the job failed.")
