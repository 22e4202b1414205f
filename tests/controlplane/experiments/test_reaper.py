"""reap_stale_jobs: jobs of devices that missed their heartbeats fail, in-process and through
the real control plane worker (Celery beat)."""
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from controlplane.devices.actions import record_heartbeat
from controlplane.experiments import actions
from controlplane.experiments.models import Experiment, Job


def go_silent(device, heartbeats: float = 3.5) -> None:
    interval = settings.ESTUARY["HEARTBEAT_INTERVAL_S"]
    device.last_seen = timezone.now() - timedelta(seconds=heartbeats * interval)
    device.save(update_fields=["last_seen"])


@pytest.mark.django_db
class TestReapStaleJobs:
    def test_it_fails_a_running_job_whose_device_went_silent(self, owner, device_factory,
                                                             experiment_factory):
        agent = device_factory(owner, name="jetson-07")
        experiment = experiment_factory(owner, host=agent.device)
        job = actions.start_job(Job.objects.get(run__experiment=experiment))
        assert actions.reap_stale_jobs() == []  # still heartbeating
        go_silent(agent.device)
        assert actions.reap_stale_jobs() == [job.id]
        job.refresh_from_db()
        assert job.state == "failed"
        assert "jetson-07 missed 3 heartbeats" in job.error
        assert Experiment.objects.get().status == "failed"

    def test_it_fails_a_queued_job_whose_device_went_offline(self, owner, device_factory,
                                                             experiment_factory):
        agent = device_factory(owner)
        job = Job.objects.get(run__experiment=experiment_factory(owner, host=agent.device))
        go_silent(agent.device)
        actions.reap_stale_jobs()
        job.refresh_from_db()
        assert job.state == "failed" and "before the job started" in job.error

    def test_it_spares_devices_within_their_allowance(self, owner, device_factory,
                                                      experiment_factory):
        agent = device_factory(owner)
        job = actions.start_job(
            Job.objects.get(run__experiment=experiment_factory(owner, host=agent.device)))
        go_silent(agent.device, heartbeats=2)
        assert actions.reap_stale_jobs() == []
        job.refresh_from_db()
        assert job.state == "running"

    def test_it_fails_a_running_job_its_heartbeating_device_does_not_list(
            self, owner, device_factory, experiment_factory):
        agent = device_factory(owner, name="jetson-08")
        job = actions.start_job(
            Job.objects.get(run__experiment=experiment_factory(owner, host=agent.device)))
        record_heartbeat(agent.device, [])  # alive, but not running it (its start was lost)
        assert actions.reap_stale_jobs() == []  # a just-started job has a full window
        interval = settings.ESTUARY["HEARTBEAT_INTERVAL_S"]
        Job.objects.filter(pk=job.pk).update(
            listed_at=timezone.now() - timedelta(seconds=3.5 * interval))
        record_heartbeat(agent.device, [])
        assert actions.reap_stale_jobs() == [job.id]
        job.refresh_from_db()
        assert job.state == "failed"
        assert "jetson-08 is alive but its agent has not listed this job" in job.error

    def test_it_spares_a_running_job_its_device_lists(self, owner, device_factory,
                                                      experiment_factory):
        agent = device_factory(owner)
        job = actions.start_job(
            Job.objects.get(run__experiment=experiment_factory(owner, host=agent.device)))
        interval = settings.ESTUARY["HEARTBEAT_INTERVAL_S"]
        Job.objects.filter(pk=job.pk).update(
            listed_at=timezone.now() - timedelta(seconds=3.5 * interval))
        record_heartbeat(agent.device, [job.id])
        assert actions.reap_stale_jobs() == []

    def test_it_leaves_finished_jobs_alone(self, owner, device_factory, experiment_factory):
        agent = device_factory(owner)
        experiment = experiment_factory(owner, host=agent.device)
        actions.cancel_experiment(experiment)
        go_silent(agent.device)
        assert actions.reap_stale_jobs() == []
        assert Job.objects.get().state == "cancelled"


@pytest.mark.django_db(transaction=True)
class TestConcurrentReapers:
    def test_two_reapers_fail_a_job_once(self, owner, device_factory, experiment_factory):
        agent = device_factory(owner)
        for _ in range(3):
            experiment_factory(owner, host=agent.device)
        jobs = list(Job.objects.all())
        for job in jobs:
            actions.start_job(job)
        go_silent(agent.device)
        results: list[list] = []
        start = threading.Barrier(2)

        def reap():
            start.wait()
            try:
                results.append(actions.reap_stale_jobs())
            finally:
                from django.db import connection
                connection.close()

        threads = [threading.Thread(target=reap) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        failed = [job_id for result in results for job_id in result]
        assert len(results) == 2
        # Never twice. (A session's background reaper, if one runs, may take some of them.)
        assert len(failed) == len(set(failed))
        assert set(failed) <= {job.id for job in jobs}
        assert set(Job.objects.values_list("state", flat=True)) == {"failed"}


@pytest.mark.django_db(transaction=True)
class TestReaperWorker:
    def test_each_run_touches_the_workers_progress_mark(self, controlplane_worker,
                                                         subprocess_env):
        """What ./estuary up's supervisor watches to restart a worker that is alive but stuck."""
        mark = Path(subprocess_env["ESTUARY_DATA_DIR"]) / "reaper.mark"
        since = time.time()
        interval = settings.ESTUARY["HEARTBEAT_INTERVAL_S"]
        deadline = time.monotonic() + 5 * interval + 20
        while time.monotonic() < deadline:
            if mark.exists() and mark.stat().st_mtime >= since:
                break
            time.sleep(0.5)
        assert mark.exists() and mark.stat().st_mtime >= since, controlplane_worker.output()

    def test_it_fails_the_job_of_a_dead_agent_within_seconds(
            self, owner, device_factory, experiment_factory, controlplane_worker):
        agent = device_factory(owner)
        job = actions.start_job(
            Job.objects.get(run__experiment=experiment_factory(owner, host=agent.device)))
        # The agent dies now: no more heartbeats. Beat runs the reaper every interval.
        interval = settings.ESTUARY["HEARTBEAT_INTERVAL_S"]
        deadline = time.monotonic() + 5 * interval + 20
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.state != "running":
                break
            time.sleep(0.5)
        assert job.state == "failed", controlplane_worker.output()
        assert "missed 3 heartbeats" in job.error
