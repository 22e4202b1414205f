"""GET /api/v1/algorithms/[{name}/]: the method catalogue."""
import pytest
from django.urls import path
from jsonschema import Draft202012Validator

from controlplane.experiments.catalogue import AlgorithmListView, catalogue
from controlplane.pagination import FilteredListMixin
from ml import registry
from ml.config import MethodConfig


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


class UncachedAlgorithmListView(AlgorithmListView):
    """The list as DRF builds it, every time (what the cached answers must equal)."""

    def get_queryset(self):
        return [method.describe() for method in registry.all_methods()]

    def list(self, request, *args, **kwargs):
        return FilteredListMixin.list(self, request)


urlpatterns = [path("api/v1/algorithms/", UncachedAlgorithmListView.as_view())]

ALGORITHMS = "/api/v1/algorithms/"
#: Queries and Accept headers: default and odd paging, the last page, a 400 and a 404.
QUERIES = [("", None), ("?page_size=5", None), ("?page=2&page_size=5", None),
           ("?page_size=010&page=02", None), ("?page_size=500", None),
           ("?page=3&page_size=7", "application/json"), ("?page_size=4", "*/*"),
           ("?page_size=4", "application/json; indent=2"), ("?colour=blue", None),
           ("?page=99", None), ("?page_size=0", None)]


def answers(client) -> list[tuple[int, bytes, dict]]:
    out = []
    for query, accept in QUERIES:
        extra = {"HTTP_ACCEPT": accept} if accept else {}
        response = client.get(ALGORITHMS + query, **extra)
        out.append((response.status_code, response.content, dict(response.headers)))
    return out



def _never_run(config, reporter):
    raise AssertionError("the catalogue never runs a method")


@pytest.mark.django_db
class TestAlgorithmListKeptRendered:
    def test_kept_answers_are_the_bytes_and_headers_of_fresh_ones(self, api, owner, settings):
        client = api(owner)
        catalogue.clear()
        built = answers(client)
        kept = answers(client)
        assert catalogue.snapshot().pages  # the 200s without indent were kept
        settings.ROOT_URLCONF = __name__
        fresh = answers(client)
        assert [status for status, _, _ in fresh] == [200] * 8 + [400, 404, 400]
        assert built == kept == fresh

    def test_it_is_revalidated_with_its_etag(self, api, owner):
        client = api(owner)
        first = client.get(ALGORITHMS)
        assert first["Cache-Control"] == "private, no-cache"
        again = client.get(ALGORITHMS, HTTP_IF_NONE_MATCH=first["ETag"])
        assert again.status_code == 304 and again.content == b""
        other = client.get(ALGORITHMS + "?page_size=3", HTTP_IF_NONE_MATCH=first["ETag"])
        assert other.status_code == 200 and other["ETag"] != first["ETag"]

    def test_a_method_registered_later_is_listed_then_gone(self, api, owner, registered):
        client = api(owner)

        def names() -> set[str]:
            answer = client.get(f"{ALGORITHMS}?page_size=500").json()
            return {entry["name"] for entry in answer["results"]}

        before = names()
        registered(registry.Method(name="zz-late", paper="-", summary="-", config=MethodConfig,
                                   run=_never_run))
        assert names() == before | {"zz-late"}
        assert client.get(f"{ALGORITHMS}zz-late/").json()["name"] == "zz-late"
        del registry._METHODS["zz-late"]
        assert names() == before
        assert client.get(f"{ALGORITHMS}zz-late/").status_code == 404
