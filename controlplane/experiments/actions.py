"""State changes of experiments, runs and jobs (Zulip style: one transaction per action).

Tasks and live events leave only on commit, so nothing is dispatched or published for a change
that rolled back. Arguments are validated by the serializers; actions trust them.
"""
from __future__ import annotations

import logging
import secrets
import uuid
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from controlplane.devices.models import offline_cutoff
from controlplane.devices.queries import devices_for
from controlplane.errors import Conflict
from controlplane.experiments import gang
from controlplane.experiments.dispatch import send_job
from controlplane.experiments.events import run_event
from controlplane.experiments.models import (
    FINISHED_STATES,
    Execution,
    Experiment,
    Job,
    JobState,
    Run,
)
from controlplane.experiments.plans import ExperimentPlan, PlannedRun
from controlplane.experiments.scheduling import choose_host
from controlplane.metrics.events import publish_on_commit

log = logging.getLogger(__name__)


@transaction.atomic
def create_experiment(owner, plan: ExperimentPlan, rerun_of: Experiment | None = None
                      ) -> Experiment:
    """Store the experiment with its runs and their jobs.

    Emulated: one job per run on the host, dispatched on commit. Distributed: one job per
    rank on its placed device, held back until the gang allocator finds all of the run's
    devices free (tried on commit, at every job's end and by the reaper's beat).
    """
    experiment = Experiment.objects.create(
        owner=owner, name=plan.name, algorithm=plan.algorithm, config=plan.config,
        methods=[run.method for run in plan.runs], testbed=plan.testbed, seed=plan.seed,
        execution=plan.execution, rerun_of=rerun_of)
    now = timezone.now()
    for position, planned in enumerate(plan.runs):
        run = Run.objects.create(experiment=experiment, position=position,
                                 method=planned.method, config=planned.config,
                                 placement=planned.placement,
                                 rendezvous_prefix=secrets.token_hex(16) if planned.placement
                                 else "")
        if planned.placement:
            for slot in planned.placement:
                Job.objects.create(run=run, rank=slot["rank"], device_id=slot["device"],
                                   celery_task_id=str(uuid.uuid4()))
            continue
        job = Job.objects.create(run=run, device=plan.host, celery_task_id=str(uuid.uuid4()),
                                 dispatched_at=now)
        transaction.on_commit(partial(dispatch_job, job.id, job.celery_task_id, plan.host.id))
    if plan.execution == Execution.DISTRIBUTED:
        transaction.on_commit(allocate_on_commit)
    return experiment


def allocate_gangs() -> list[uuid.UUID]:
    """Allocate every waiting distributed run whose devices are all free, and send its jobs
    (controlplane.experiments.gang); returns the runs allocated now."""
    return gang.allocate_waiting_runs(dispatch_job)


def allocate_on_commit() -> None:
    """Try to allocate the waiting gangs; a failure here must not fail the request (the
    reaper's beat tries again)."""
    try:
        allocate_gangs()
    except Exception:  # noqa: BLE001
        log.exception("gang allocation failed; the reaper will try again")


def rerun_experiment(owner, original: Experiment) -> Experiment:
    """A new experiment with ``original``'s methods, configs, seed and testbed, on its host if
    that is still one of ``owner``'s online devices, else on the host the usual rule picks
    (the emulated testbed is in the config: the host changes wall times only). A distributed
    experiment is rerun with the same placement (400 on ``devices`` if one was deleted)."""
    runs = list(original.runs.prefetch_related("jobs__device").order_by("position"))
    previous = next((run.job.device for run in runs if run.job is not None), None)
    if original.execution == Execution.DISTRIBUTED:
        placed = {slot["device"] for run in runs for slot in run.placement}
        mine = {str(pk) for pk in devices_for(owner).filter(pk__in=placed)
                .values_list("pk", flat=True)}
        if placed - mine:
            raise ValidationError({"devices": [
                "A device of the original placement was deleted; create a new experiment."]})
        host = previous
    else:
        usable = previous is not None and devices_for(owner).filter(pk=previous.pk).exists() \
            and previous.is_online()
        host = choose_host(owner, previous.id if usable else None)
    plan = ExperimentPlan(
        name=f"{original.name} (rerun)"[:200], algorithm=original.algorithm,
        config=original.config,
        runs=[PlannedRun(run.method, run.config, run.placement) for run in runs],
        testbed=original.testbed, seed=original.seed, host=host,
        execution=original.execution)
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


def _lock_run_of(job_id: uuid.UUID) -> Run | None:
    """Lock the run of job ``job_id``. Every change of a job's state first locks its run, so
    the jobs of one run change one at a time (and in one lock order, run then job)."""
    run_id = Job.objects.filter(pk=job_id).values_list("run_id", flat=True).first()
    return Run.objects.select_for_update().filter(pk=run_id).first()


def _locked(job: Job) -> Job:
    _lock_run_of(job.pk)
    # of=self: PostgreSQL cannot lock the nullable side (device) of the outer join.
    return (Job.objects.select_for_update(of=("self",)).select_related("run", "device")
            .get(pk=job.pk))


def job_label(job: Job) -> str:
    """How a run's error names a job: its rank and device."""
    name = job.device.name if job.device is not None else "a deleted device"
    return f"rank {job.rank} (device {name})"


def _set_state(job: Job, state: str, now: datetime, error: str = "",
               result: dict[str, Any] | None = None) -> None:
    """Move a locked job (its run locked first) to ``state`` and settle its run."""
    job.state = state
    if state == JobState.RUNNING:
        job.started_at = now
    else:
        job.finished_at = now
        job.error = error
        transaction.on_commit(allocate_on_commit)  # its device is free for a waiting gang
    job.save()
    _settle_run(job.run, job, now, result if job.rank == 0 else None)


def _settle_run(run: Run, trigger: Job, now: datetime, result: dict[str, Any] | None) -> None:
    """Derive the run's state from its jobs after ``trigger`` changed; publish it on commit.

    Succeeded when every job succeeded; failed as soon as one fails (the error names its rank
    and device), cancelled when one is cancelled; the other unfinished jobs are then cancelled
    (their agents learn it from their next heartbeat and kill the role). The coordinator's
    (rank 0) result is the run's result.
    """
    if result is not None:
        run.result = result
    distributed = run.is_distributed
    if run.state not in FINISHED_STATES:
        if trigger.state == JobState.RUNNING:
            if run.state == JobState.QUEUED:
                run.state, run.started_at = JobState.RUNNING, now
        elif trigger.state == JobState.SUCCEEDED:
            if all(state == JobState.SUCCEEDED for state in
                   run.jobs.values_list("state", flat=True)):
                run.state, run.finished_at = JobState.SUCCEEDED, now
        else:
            run.state, run.finished_at, run.waiting_for = trigger.state, now, []
            run.error = (f"{job_label(trigger)}: {trigger.error}"
                         if distributed and trigger.state == JobState.FAILED else trigger.error)
            why = (f"Stopped: {job_label(trigger)} {trigger.state}." if distributed else "")
            for sibling in (run.jobs.select_for_update().exclude(pk=trigger.pk)
                            .exclude(state__in=FINISHED_STATES)):
                sibling.state, sibling.finished_at, sibling.error = JobState.CANCELLED, now, why
                sibling.save(update_fields=["state", "finished_at", "error"])
    run.save()
    refresh_experiment_status(run.experiment_id)
    publish_on_commit(run.experiment_id, partial(run_event, run.id))


def refresh_experiment_status(experiment_id: uuid.UUID) -> Experiment:
    """Derive the experiment's status from its runs (see docs/architecture.md)."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment_id)
    states = set(Run.objects.filter(experiment_id=experiment_id)
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
    heartbeat or metrics post and stop the role (a distributed run's every rank)."""
    now = timezone.now()
    list(Run.objects.select_for_update().filter(experiment=experiment).order_by("position"))
    jobs = list(Job.objects.select_for_update(of=("self",)).select_related("run", "device")
                .filter(run__experiment=experiment, state__in=[JobState.QUEUED, JobState.RUNNING])
                .order_by("run__position", "rank"))
    cancelled = 0
    for job in jobs:
        job.refresh_from_db(fields=["state"])  # a sibling's cancel may have settled it
        if job.state in FINISHED_STATES:
            cancelled += 1
            continue
        _set_state(job, JobState.CANCELLED, now, error="Cancelled by its owner.")
        cancelled += 1
    return cancelled


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

    ``provenance`` is what the agent runs it with (:func:`run_provenance`; the coordinator's
    for a distributed run). Idempotent for the hosting device (views only pass its own jobs):
    a retry of a start whose answer was lost finds the job running with nothing reported yet
    (for a worker rank: within the gang's claim deadline) and gets the same spec.
    """
    job = _locked(job)
    if job.state == JobState.RUNNING:
        if job.rank == 0 and not job.run.points.exists():
            return job
        deadline = timedelta(seconds=settings.ESTUARY["GANG_CLAIM_DEADLINE_S"])
        if job.rank > 0 and job.started_at and timezone.now() - job.started_at < deadline:
            return job
    if job.state != JobState.QUEUED or job.dispatched_at is None:
        raise Conflict(f"The job is {job.state}, not queued: do not run it.")
    now = timezone.now()
    job.listed_at = now  # a full window to show up in its device's heartbeats
    if job.rank == 0:
        job.run.provenance = run_provenance(job, provenance)
    _set_state(job, JobState.RUNNING, now)
    return job


@transaction.atomic
def report_rendezvous_port(job: Job, port: int) -> Job:
    """The coordinator's agent opened the run's store on ``port``; 409 unless its job runs."""
    job = _locked(job)
    if job.rank != 0 or not job.run.is_distributed:
        raise Conflict("Only the coordinator (rank 0) of a distributed run hosts the store.")
    if job.state != JobState.RUNNING:
        raise Conflict(f"The job is {job.state}, not running.")
    job.run.rendezvous_port = port
    job.run.save(update_fields=["rendezvous_port"])
    return job


def rendezvous_for(job: Job) -> dict[str, Any] | None:
    """The rendezvous ``job``'s rank joins (``ml.distributed.Rendezvous`` fields), or None
    while the coordinator's agent has not reported its store's port. The coordinator gets
    port 0 (open one on a free port). Handed only to the job's own device."""
    run = job.run
    coordinator = run.jobs.select_related("device").get(rank=0)
    if job.rank == 0:
        port = 0
    elif run.rendezvous_port is None:
        return None
    else:
        port = run.rendezvous_port
    host = coordinator.device.advertise_address if coordinator.device else ""
    return {"host": host or "127.0.0.1", "port": port, "prefix": run.rendezvous_prefix,
            "timeout_s": float(settings.ESTUARY["RENDEZVOUS_TIMEOUT_S"])}


@transaction.atomic
def finish_job(job: Job, state: str, error: str, result: dict[str, Any]) -> Job:
    """The hosting agent reports the end of a job.

    A cancelled job stays cancelled (the agent is confirming it stopped) but keeps the partial
    result it sends; any other state than running is a 409.
    """
    job = _locked(job)
    if job.state == JobState.CANCELLED:
        if job.rank == 0 and result:
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
            _lock_run_of(job_id)
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
      (a queued job would never start). A distributed run's queued jobs fail instead when
      their agent misses the gang's claim deadline (:func:`fail_unclaimed_gang_jobs`).
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
    # A distributed run's queued jobs answer to the gang's claim deadline instead.
    for job in (Job.objects.filter(state=JobState.QUEUED,
                                   run__experiment__execution=Execution.EMULATED)
                .filter(silent).select_related("device")):
        failed += fail_jobs(Job.objects.filter(pk=job.pk).filter(silent), _silence_error(job))
    for job in (Job.objects.filter(state=JobState.RUNNING).filter(silent | unlisted)
                .select_related("device")):
        still_stale = Job.objects.filter(pk=job.pk, state=JobState.RUNNING).filter(silent | unlisted)
        failed += fail_jobs(still_stale, _silence_error(job, cutoff))
    return failed + fail_unclaimed_gang_jobs()


def fail_unclaimed_gang_jobs() -> list[uuid.UUID]:
    """Fail the jobs of allocated gangs whose agent did not claim (``start/``) them within
    ``GANG_CLAIM_DEADLINE_S``; their runs fail naming the device, the others are released."""
    deadline = settings.ESTUARY["GANG_CLAIM_DEADLINE_S"]
    late = timezone.now() - timedelta(seconds=deadline)
    failed = []
    for job in (Job.objects.filter(state=JobState.QUEUED, dispatched_at__lt=late,
                                   run__allocated_at__isnull=False).select_related("device")):
        name = job.device.name if job.device is not None else "(deleted)"
        failed += fail_jobs(Job.objects.filter(pk=job.pk, state=JobState.QUEUED), (
            f"Device {name} did not claim its job within {deadline} s of the gang's "
            "allocation: its agent is offline or unresponsive."))
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
