"""reap_stale_jobs: jobs of devices that missed their heartbeats fail, in-process and through
the real control plane worker (Celery beat)."""
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

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

    def test_it_leaves_finished_jobs_alone(self, owner, device_factory, experiment_factory):
        agent = device_factory(owner)
        experiment = experiment_factory(owner, host=agent.device)
        actions.cancel_experiment(experiment)
        go_silent(agent.device)
        assert actions.reap_stale_jobs() == []
        assert Job.objects.get().state == "cancelled"


@pytest.mark.django_db(transaction=True)
class TestReaperWorker:
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
