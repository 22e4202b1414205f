"""POST /api/v1/experiments/{id}/rerun/ and the provenance each run records (docs/controlplane.md)."""
import pytest

from agents.provenance import agent_provenance
from controlplane.experiments import actions
from controlplane.experiments.models import Experiment, Job
from tests.fixtures.agents import wait_for

#: A small real FedAvg: two workers on sklearn's digits, three rounds.
SMALL = {"rounds": 3, "dataset": "digits", "workers": 2}


@pytest.fixture
def experiment(owner, device_factory, experiment_factory, method_with_baseline):
    host = device_factory(owner).device
    return experiment_factory(owner, host=host, algorithm=method_with_baseline.name,
                              baselines=method_with_baseline.baselines[:1], name="original",
                              config={"seed": 7})


@pytest.mark.django_db
class TestRerun:
    def test_it_copies_methods_configs_seed_and_testbed(self, api, owner, experiment):
        answer = api(owner).post(f"/api/v1/experiments/{experiment.id}/rerun/")
        assert answer.status_code == 201, answer.content
        rerun = answer.json()
        assert rerun["rerun_of"] == str(experiment.id)
        assert rerun["id"] != str(experiment.id)
        assert rerun["code_version_differs"] is None  # nothing ran yet
        original = api(owner).get(f"/api/v1/experiments/{experiment.id}/").json()
        for key in ("algorithm", "config", "methods", "testbed", "seed"):
            assert rerun[key] == original[key], key
        assert rerun["seed"] == 7
        assert [(r["method"], r["config"]) for r in rerun["runs"]] == \
            [(r["method"], r["config"]) for r in original["runs"]]
        # Same host: it is still the owner's and online.
        assert {r["job"]["device"] for r in rerun["runs"]} == \
            {r["job"]["device"] for r in original["runs"]}

    def test_it_is_404_for_other_users(self, api, teammate, outsider, experiment):
        for user in (teammate, outsider):
            answer = api(user).post(f"/api/v1/experiments/{experiment.id}/rerun/")
            assert answer.status_code == 404
        assert Experiment.objects.count() == 1

    def test_it_picks_another_host_when_the_original_one_is_gone(
            self, api, owner, experiment, device_factory):
        Job.objects.filter(run__experiment=experiment).first().device.delete()
        other = device_factory(owner, name="spare").device
        rerun = api(owner).post(f"/api/v1/experiments/{experiment.id}/rerun/").json()
        assert {r["job"]["device"] for r in rerun["runs"]} == {str(other.id)}

    def test_it_is_400_naming_host_when_no_device_can_host_it(self, api, owner, experiment):
        Job.objects.filter(run__experiment=experiment).first().device.delete()
        answer = api(owner).post(f"/api/v1/experiments/{experiment.id}/rerun/")
        assert answer.status_code == 400
        assert list(answer.json()) == ["host"]
        assert Experiment.objects.count() == 1

    def test_it_says_when_the_code_version_differs(self, api, owner, experiment):
        rerun = Experiment.objects.get(
            pk=api(owner).post(f"/api/v1/experiments/{experiment.id}/rerun/").json()["id"])
        for target, version in ((experiment, "git:aaa"), (rerun, "git:bbb")):
            for job in Job.objects.filter(run__experiment=target):
                actions.start_job(job, {"code_version": version, "python": "3.11",
                                        "packages": {}})
        body = api(owner).get(f"/api/v1/experiments/{rerun.id}/").json()
        assert body["code_version_differs"] is True


@pytest.mark.django_db
class TestJobStartProvenance:
    def test_it_records_the_agents_versions_the_profile_config_and_seed(
            self, api, owner, device_factory, experiment_factory):
        enrolled = device_factory(owner)
        experiment = experiment_factory(owner, host=enrolled.device, config={"seed": 3})
        job = Job.objects.get(run__experiment=experiment)
        sent = {"code_version": "git:abc", "python": "3.11.7", "packages": {"torch": "2.13.0"}}
        answer = api(device=enrolled.credential).post(
            f"/api/v1/agents/jobs/{job.id}/start/", {"provenance": sent}, format="json")
        assert answer.status_code == 200, answer.content
        run = api(owner).get(f"/api/v1/runs/{job.run_id}/").json()
        provenance = run["provenance"]
        assert provenance["code_version"] == "git:abc"
        assert provenance["packages"] == {"torch": "2.13.0"}
        assert provenance["seed"] == 3
        assert provenance["config"] == run["config"]
        assert provenance["device"]["profile"] == enrolled.device.testbed_entry()

    def test_it_refuses_malformed_provenance_naming_the_field(
            self, api, owner, device_factory, experiment_factory):
        enrolled = device_factory(owner)
        experiment = experiment_factory(owner, host=enrolled.device)
        job = Job.objects.get(run__experiment=experiment)
        answer = api(device=enrolled.credential).post(
            f"/api/v1/agents/jobs/{job.id}/start/",
            {"provenance": {"code_version": "x", "python": "3", "packages": {"torch": 2},
                            "secret": 1}}, format="json")
        assert answer.status_code == 400
        assert set(answer.json()["provenance"]) == {"packages", "secret"}
        assert Job.objects.get(pk=job.id).state == "queued"


def metric_points(run_id: str) -> dict[tuple[str, int], tuple[float, float]]:
    """(name, step) -> (value, sim_time_s): all but wall time, which no rerun repeats."""
    from controlplane.metrics.models import MetricPoint

    return {(p.name, p.step): (p.value, p.sim_time_s)
            for p in MetricPoint.objects.filter(run_id=run_id)}


@pytest.mark.django_db(transaction=True)
def test_it_reruns_an_emulated_cpu_experiment_with_the_same_metrics(
        agent_factory, owner, user_http, asgi_server):
    http = user_http(owner)
    agent = agent_factory("cloud-rerun")
    created = http.post(f"{asgi_server}/api/v1/experiments/", json={
        "name": "to rerun", "algorithm": "fedavg", "config": SMALL, "preset": "local-3",
        "host": agent.device_id, "seed": 11}, timeout=30)
    assert created.status_code == 201, created.text
    original = created.json()

    def finished(experiment_id: str) -> dict | None:
        body = http.get(f"{asgi_server}/api/v1/experiments/{experiment_id}/", timeout=30).json()
        return body if body["status"] != "running" else None

    wait_for(lambda: finished(original["id"]), 120, "the original to finish")
    answer = http.post(f"{asgi_server}/api/v1/experiments/{original['id']}/rerun/", timeout=30)
    assert answer.status_code == 201, answer.text
    rerun = wait_for(lambda: finished(answer.json()["id"]), 120, "the rerun to finish")

    assert rerun["status"] == "succeeded", rerun["runs"][0]["error"]
    assert rerun["rerun_of"] == original["id"]
    assert rerun["code_version_differs"] is False
    first, second = original["runs"][0]["id"], rerun["runs"][0]["id"]
    assert metric_points(first)
    assert metric_points(second) == metric_points(first)
    provenance = rerun["runs"][0]["provenance"]
    assert provenance["code_version"] == agent_provenance()["code_version"]
    assert provenance["packages"]["torch"] == agent_provenance()["packages"]["torch"]
    assert provenance["seed"] == 11
    assert provenance["device"]["id"] == agent.device_id
