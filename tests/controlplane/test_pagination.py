"""Every list is paginated and filtered: ``?page=``, ``?page_size=`` and validated filters."""
import pytest

from controlplane.experiments import actions
from controlplane.experiments.models import Experiment, Job
from controlplane.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

LISTS = ["/api/v1/experiments/", "/api/v1/runs/", "/api/v1/devices/", "/api/v1/algorithms/"]


@pytest.mark.django_db
class TestPaging:
    def test_a_long_list_comes_in_pages_of_the_default_size(self, api, owner, device_factory):
        for i in range(DEFAULT_PAGE_SIZE + 5):
            device_factory(owner, name=f"dev-{i:03d}", online=False)
        first = api(owner).get("/api/v1/devices/").json()
        assert first["count"] == DEFAULT_PAGE_SIZE + 5
        assert len(first["results"]) == DEFAULT_PAGE_SIZE and first["previous"] is None
        second = api(owner).get(first["next"]).json()
        assert [d["name"] for d in second["results"]] == [f"dev-{i:03d}" for i in range(50, 55)]
        assert second["next"] is None

    def test_page_size_picks_the_size(self, api, owner, device_factory):
        for i in range(3):
            device_factory(owner, name=f"dev-{i}")
        answer = api(owner).get("/api/v1/devices/?page_size=2&page=2").json()
        assert answer["count"] == 3 and [d["name"] for d in answer["results"]] == ["dev-2"]

    @pytest.mark.parametrize("url", LISTS)
    @pytest.mark.parametrize("size", [MAX_PAGE_SIZE + 1, 0, "ten"])
    def test_a_page_size_out_of_bounds_is_refused_naming_it(self, api, owner, url, size):
        response = api(owner).get(f"{url}?page_size={size}")
        assert response.status_code == 400
        assert list(response.json()) == ["page_size"]

    @pytest.mark.parametrize("url", LISTS)
    def test_an_unknown_parameter_is_refused_naming_it(self, api, owner, url):
        response = api(owner).get(f"{url}?stauts=running")
        assert response.status_code == 400
        assert list(response.json()) == ["stauts"]


@pytest.fixture
def experiments(owner, device_factory, experiment_factory):
    """Two experiments on one device: FedAvg "mnist baseline" (finished: cancelled) and
    SplitFed vs FedAvg "Split run" (running, its first job started)."""
    host = device_factory(owner, name="gpu-1").device
    fedavg = experiment_factory(owner, host=host, name="mnist baseline")
    actions.cancel_experiment(fedavg)
    split = experiment_factory(owner, host=host, algorithm="splitfed", baselines=["fedavg"],
                               name="Split run")
    actions.start_job(Job.objects.get(run__experiment=split, run__position=0))
    return fedavg, split


def names(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [item["name"] for item in response.json()["results"]]


@pytest.mark.django_db
class TestExperimentFilters:
    def test_it_filters_by_status_algorithm_method_and_name(self, api, owner, experiments):
        client = api(owner)
        assert names(client.get("/api/v1/experiments/?status=running")) == ["Split run"]
        assert names(client.get("/api/v1/experiments/?status=cancelled")) == ["mnist baseline"]
        assert names(client.get("/api/v1/experiments/?algorithm=fedavg")) == ["mnist baseline"]
        assert names(client.get("/api/v1/experiments/?method=fedavg")) == [
            "Split run", "mnist baseline"]
        assert names(client.get("/api/v1/experiments/?name=SPLIT")) == ["Split run"]

    @pytest.mark.parametrize("parameter, value", [("status", "exploded"),
                                                  ("algorithm", "fedavgg"), ("method", "nope")])
    def test_an_unknown_value_is_refused_naming_the_parameter(self, api, owner, parameter,
                                                              value):
        response = api(owner).get(f"/api/v1/experiments/?{parameter}={value}")
        assert response.status_code == 400
        assert list(response.json()) == [parameter]


@pytest.mark.django_db
class TestRunFilters:
    def test_it_filters_by_state_method_and_experiment_name(self, api, owner, experiments):
        fedavg, split = experiments
        client = api(owner)

        def runs(query: str) -> list[tuple[str, str]]:
            answer = client.get(f"/api/v1/runs/?{query}")
            assert answer.status_code == 200, answer.json()
            by_id = {str(e.id): e.name for e in Experiment.objects.all()}
            return [(by_id[r["experiment"]], r["method"]) for r in answer.json()["results"]]

        assert runs("state=running") == [("Split run", "splitfed")]
        assert runs("state=queued") == [("Split run", "fedavg")]
        assert runs("method=fedavg") == [("Split run", "fedavg"), ("mnist baseline", "fedavg")]
        assert runs("name=mnist") == [("mnist baseline", "fedavg")]
        assert runs(f"experiment={split.id}&method=splitfed") == [("Split run", "splitfed")]

    def test_an_unknown_state_is_refused_naming_it(self, api, owner):
        response = api(owner).get("/api/v1/runs/?state=paused")
        assert response.status_code == 400
        assert list(response.json()) == ["state"]


@pytest.mark.django_db
class TestDeviceFilters:
    def test_it_filters_by_status_kind_and_name(self, api, owner, device_factory, experiments):
        device_factory(owner, name="jetson-1", profile="jetson-nx")
        device_factory(owner, name="jetson-2", profile="jetson-nx", online=False)
        client = api(owner)
        assert names(client.get("/api/v1/devices/?status=busy")) == ["gpu-1"]
        assert names(client.get("/api/v1/devices/?status=online")) == ["jetson-1"]
        assert names(client.get("/api/v1/devices/?status=offline")) == ["jetson-2"]
        assert names(client.get("/api/v1/devices/?kind=edge")) == ["jetson-1", "jetson-2"]
        assert names(client.get("/api/v1/devices/?name=GPU")) == ["gpu-1"]

    def test_a_degraded_device_is_found_as_degraded_only(self, api, owner, device_factory):
        device_factory(owner, name="jetson-1", profile="jetson-nx")
        deaf = device_factory(owner, name="jetson-deaf", profile="jetson-nx")
        api(device=deaf.credential).post("/api/v1/agents/heartbeat/", {
            "running_jobs": [], "worker": {"consuming": False, "detail": "broker unreachable"}})
        client = api(owner)
        assert names(client.get("/api/v1/devices/?status=degraded")) == ["jetson-deaf"]
        assert names(client.get("/api/v1/devices/?status=online")) == ["jetson-1"]
        listed = client.get("/api/v1/devices/").json()["results"]
        assert {d["name"]: d["status"] for d in listed} == {"jetson-1": "online",
                                                            "jetson-deaf": "degraded"}

    def test_an_unknown_kind_is_refused_naming_it(self, api, owner):
        response = api(owner).get("/api/v1/devices/?kind=toaster")
        assert response.status_code == 400
        assert list(response.json()) == ["kind"]
