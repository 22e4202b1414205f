"""The agent's side of a job: POST /api/v1/agents/jobs/{id}/start/ and finish/."""
import pytest

from controlplane.experiments import actions
from controlplane.experiments.models import Experiment, Job
from tests.controlplane.metrics.points import point


def start(job) -> str:
    return f"/api/v1/agents/jobs/{job.id}/start/"


def finish(job) -> str:
    return f"/api/v1/agents/jobs/{job.id}/finish/"


@pytest.fixture
def hosted(owner, device_factory, experiment_factory):
    """(agent, experiment, job): a queued FedAvg job on the owner's online device."""
    agent = device_factory(owner)
    experiment = experiment_factory(owner, host=agent.device, config={"rounds": 3})
    return agent, experiment, Job.objects.get(run__experiment=experiment)


@pytest.mark.django_db
class TestJobStart:
    def test_it_hands_the_agent_its_config(self, api, hosted):
        agent, experiment, job = hosted
        response = api(device=agent.credential).post(start(job))
        assert response.status_code == 200
        assert response.json() == {"config": job.run.config, "method": "fedavg",
                                   "run_id": str(job.run_id), "execution": "emulated",
                                   "rank": 0, "world_size": 1, "placement": [],
                                   "rendezvous": None}
        job.refresh_from_db()
        job.run.refresh_from_db()
        assert (job.state, job.run.state) == ("running", "running")
        assert job.started_at and job.run.started_at

    def test_it_answers_a_retry_whose_answer_was_lost_with_the_same_spec(self, api, hosted):
        agent, _, job = hosted
        first = api(device=agent.credential).post(start(job))
        retry = api(device=agent.credential).post(start(job))
        assert (first.status_code, retry.status_code) == (200, 200)
        assert retry.json() == first.json()
        job.refresh_from_db()
        assert job.state == "running"

    def test_it_is_409_once_the_job_reported_points(self, api, hosted):
        agent, _, job = hosted
        device = api(device=agent.credential)
        device.post(start(job))
        device.post(f"/api/v1/runs/{job.run_id}/metrics/", {"points": [point()]}, format="json")
        assert device.post(start(job)).status_code == 409

    def test_it_is_409_for_a_cancelled_job(self, api, hosted):
        agent, experiment, job = hosted
        actions.cancel_experiment(experiment)
        response = api(device=agent.credential).post(start(job))
        assert response.status_code == 409
        assert "cancelled" in response.json()["detail"]

    def test_it_is_404_for_another_devices_job(self, api, owner, hosted, device_factory):
        _, _, job = hosted
        other = device_factory(owner)
        assert api(device=other.credential).post(start(job)).status_code == 404
        job.refresh_from_db()
        assert job.state == "queued"

    def test_it_refuses_users(self, api, owner, hosted):
        _, _, job = hosted
        assert api(owner).post(start(job)).status_code == 403
        assert api().post(start(job)).status_code == 401


@pytest.mark.django_db
class TestJobFinish:
    def test_it_records_success(self, api, hosted):
        agent, experiment, job = hosted
        api(device=agent.credential).post(start(job))
        response = api(device=agent.credential).post(
            finish(job), {"state": "succeeded", "result": {"final": {"accuracy": 0.9}}})
        assert response.status_code == 200
        job.refresh_from_db()
        job.run.refresh_from_db()
        experiment.refresh_from_db()
        assert (job.state, job.run.state, experiment.status) == ("succeeded",) * 3
        assert job.run.result == {"final": {"accuracy": 0.9}}
        assert job.finished_at and experiment.finished_at

    def test_it_records_a_failure_with_its_error(self, api, hosted):
        agent, experiment, job = hosted
        api(device=agent.credential).post(start(job))
        api(device=agent.credential).post(finish(job), {"state": "failed",
                                                        "error": "CUDA out of memory"})
        job.refresh_from_db()
        experiment.refresh_from_db()
        assert (job.state, job.error, experiment.status) == ("failed", "CUDA out of memory",
                                                            "failed")

    def test_it_keeps_a_cancelled_job_cancelled(self, api, hosted):
        agent, experiment, job = hosted
        api(device=agent.credential).post(start(job))
        actions.cancel_experiment(experiment)
        response = api(device=agent.credential).post(
            finish(job), {"state": "cancelled", "result": {"rounds_done": 1}})
        assert response.status_code == 200
        assert response.json() == {"state": "cancelled"}
        job.run.refresh_from_db()
        assert job.run.result == {"rounds_done": 1}

    def test_it_is_409_for_a_queued_job(self, api, hosted):
        agent, _, job = hosted
        response = api(device=agent.credential).post(finish(job), {"state": "succeeded"})
        assert response.status_code == 409

    @pytest.mark.parametrize("payload, field", [
        ({"state": "queued"}, "state"),
        ({}, "state"),
        ({"state": "failed", "result": [1]}, "result"),
        ({"state": "failed", "result": {"a": "nul\x00"}}, "result"),
        ({"state": "failed", "error": None}, "error"),
        ({"state": "failed", "verdict": "meh"}, "verdict"),
    ])
    def test_it_rejects_bad_reports(self, api, hosted, payload, field):
        agent, _, job = hosted
        api(device=agent.credential).post(start(job))
        response = api(device=agent.credential).post(finish(job), payload)
        assert response.status_code == 400
        assert field in response.json()
        job.refresh_from_db()
        assert job.state == "running"

    def test_it_is_404_for_another_devices_job(self, api, owner, hosted, device_factory):
        agent, _, job = hosted
        api(device=agent.credential).post(start(job))
        other = device_factory(owner)
        response = api(device=other.credential).post(finish(job), {"state": "succeeded"})
        assert response.status_code == 404


@pytest.mark.django_db
class TestExperimentCancel:
    def test_it_cancels_queued_and_running_jobs(self, api, owner, device_factory,
                                                experiment_factory, method_with_baseline):
        agent = device_factory(owner)
        experiment = experiment_factory(owner, host=agent.device,
                                        algorithm=method_with_baseline.name,
                                        baselines=method_with_baseline.baselines[:1])
        first, second = Job.objects.filter(run__experiment=experiment).order_by("run__position")
        actions.start_job(first)
        response = api(owner).post(f"/api/v1/experiments/{experiment.id}/cancel/")
        assert response.status_code == 200
        assert response.json()["cancelled_jobs"] == 2
        assert response.json()["experiment"]["status"] == "cancelled"
        assert set(Job.objects.values_list("state", flat=True)) == {"cancelled"}
        assert api(device=agent.credential).post(start(second)).status_code == 409

    def test_it_leaves_finished_jobs_alone(self, api, owner, hosted):
        agent, experiment, job = hosted
        api(device=agent.credential).post(start(job))
        api(device=agent.credential).post(finish(job), {"state": "succeeded"})
        response = api(owner).post(f"/api/v1/experiments/{experiment.id}/cancel/")
        assert response.json()["cancelled_jobs"] == 0
        experiment.refresh_from_db()
        assert experiment.status == "succeeded"

    def test_it_is_404_for_other_users(self, api, teammate, outsider, hosted):
        _, experiment, job = hosted
        for user in (teammate, outsider):
            assert api(user).post(
                f"/api/v1/experiments/{experiment.id}/cancel/").status_code == 404
        job.refresh_from_db()
        assert job.state == "queued"
        assert Experiment.objects.get().status == "running"
