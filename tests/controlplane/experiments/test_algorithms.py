"""GET /api/v1/algorithms/[{name}/]: the method catalogue."""
import pytest
from jsonschema import Draft202012Validator

from ml import registry


@pytest.mark.django_db
class TestAlgorithmList:
    def test_it_lists_every_registered_method(self, api, owner):
        response = api(owner).get("/api/v1/algorithms/")
        assert response.status_code == 200
        listed = {entry["name"]: entry for entry in response.json()["results"]}
        assert set(listed) == {method.name for method in registry.all_methods()}
        fedavg = listed["fedavg"]
        assert fedavg["paper"] and "rounds" in fedavg["defaults"]
        Draft202012Validator.check_schema(fedavg["schema"])
        assert "rounds" in fedavg["schema"]["properties"]

    def test_it_refuses_anonymous_users(self, api):
        assert api().get("/api/v1/algorithms/").status_code == 401


@pytest.mark.django_db
class TestAlgorithmDetail:
    def test_it_describes_one_method(self, api, owner):
        body = api(owner).get("/api/v1/algorithms/fedavg/").json()
        assert body == registry.get("fedavg").describe()

    def test_it_is_404_for_an_unknown_method(self, api, owner):
        assert api(owner).get("/api/v1/algorithms/fedsgd-9000/").status_code == 404
