"""Hostile request bodies: each test is a bad input the API must refuse with a 400 naming it."""
import csv
import io
import json

import pytest

from controlplane.experiments import actions
from controlplane.experiments.models import Job, JobState, Run
from controlplane.metrics.models import MetricPoint
from tests.controlplane.metrics.points import point

DEEP = "[" * 1000 + "]" * 1000


def post_raw(client, url: str, body: str):
    return client.post(url, data=body, content_type="application/json")


@pytest.fixture
def hosted(owner, device_factory, experiment_factory):
    """(agent, job): the owner's FedAvg job, started on the owner's online device."""
    agent = device_factory(owner)
    experiment = experiment_factory(owner, host=agent.device, config={"rounds": 3})
    job = Job.objects.get(run__experiment=experiment)
    actions.start_job(job)
    return agent, job


@pytest.mark.django_db
class TestDeepNesting:
    @pytest.mark.parametrize("url", ["/api/v1/auth/token/", "/api/v1/agents/enrol/"])
    def test_it_refuses_a_deep_body_on_anonymous_endpoints(self, api, url):
        response = post_raw(api(), url, DEEP)
        assert response.status_code == 400
        assert "nested more than" in response.json()["detail"]

    def test_it_refuses_a_deep_experiment_config(self, api, owner, device_factory):
        device_factory(owner)
        body = ('{"name": "deep", "algorithm": "fedavg", "config": {"x": '
                + "[" * 1000 + "]" * 1000 + "}}")
        response = post_raw(api(owner), "/api/v1/experiments/", body)
        assert response.status_code == 400
        assert "nested more than" in response.json()["detail"]

    def test_it_refuses_a_deep_metric_batch(self, api, owner, device_factory,
                                            experiment_factory):
        agent = device_factory(owner)
        run = Run.objects.get(experiment=experiment_factory(owner, host=agent.device))
        body = '{"points": ' + DEEP + "}"
        response = post_raw(api(device=agent.credential), f"/api/v1/runs/{run.id}/metrics/",
                            body)
        assert response.status_code == 400

    def test_brackets_inside_strings_do_not_count(self, api, owner, device_factory):
        device_factory(owner)
        response = api(owner).post("/api/v1/experiments/", {
            "name": "[" * 1000, "algorithm": "fedavg", "config": {"rounds": 1}})
        assert response.status_code == 400  # the name is too long, not too deep
        assert "name" in response.json()


@pytest.mark.parametrize("text, too_deep", [
    ('{"a": "[[[[[[", "b": [[1]]}', False),       # brackets inside a string
    ('{"a": "\\"[[[[[[", "b": [[1]]}', False),    # ... after an escaped quote
    ('{"a": "x\\\\", "b": [[[1]]]}', True),      # a string ending in a backslash
    ('[[["]]]"]]]', False),
    ('[[[["]]]"]]]]', True),
])
def test_the_depth_scan_skips_strings(text, too_deep):
    from controlplane.parsers import json_depth_exceeds

    json.loads(text)  # each is valid JSON
    assert json_depth_exceeds(text, 3) is too_deep


@pytest.mark.django_db
class TestNonFiniteNumbers:
    def test_an_overflowing_result_is_refused_naming_it_and_the_job_stays_open(self, api,
                                                                               hosted):
        agent, job = hosted
        body = '{"state": "succeeded", "result": {"final": {"loss": 1e309}}}'
        response = post_raw(api(device=agent.credential),
                            f"/api/v1/agents/jobs/{job.id}/finish/", body)
        assert response.status_code == 400
        assert response.json() == {"result": {"final": {"loss": ["Must be a finite number."]}}}
        job.refresh_from_db()
        assert job.state == JobState.RUNNING  # the agent can report again
        response = api(device=agent.credential).post(
            f"/api/v1/agents/jobs/{job.id}/finish/", {"state": "succeeded"})
        assert response.status_code == 200

    @pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "-1e400"])
    def test_it_refuses_non_finite_anywhere_in_a_config(self, api, owner, device_factory,
                                                        literal):
        device_factory(owner)
        body = ('{"name": "n", "algorithm": "fedavg", "config": {"lr": ' + literal + "}}")
        response = post_raw(api(owner), "/api/v1/experiments/", body)
        assert response.status_code == 400
        assert response.json() == {"config": {"lr": ["Must be a finite number."]}}

    def test_metrics_still_name_the_non_finite_point(self, api, owner, device_factory,
                                                     experiment_factory):
        agent = device_factory(owner)
        run = Run.objects.get(experiment=experiment_factory(owner, host=agent.device))
        body = json.dumps({"points": [{**point(step=1), "value": "OVERFLOW"}, point(step=2)]})
        body = body.replace('"OVERFLOW"', "1e309")
        response = post_raw(api(device=agent.credential), f"/api/v1/runs/{run.id}/metrics/",
                            body)
        assert response.status_code == 400
        assert response.json() == {"points": {"0": {"value": ["Must be a finite number."]}}}
        assert not MetricPoint.objects.filter(run=run).exists()


@pytest.mark.django_db
class TestWrongTypes:
    def test_a_boolean_is_not_a_round_count(self, api, owner, device_factory):
        device_factory(owner)
        response = api(owner).post("/api/v1/experiments/", {
            "name": "n", "algorithm": "fedavg", "config": {"rounds": True}})
        assert response.status_code == 400
        assert "rounds" in response.json()["config"]

    def test_a_number_is_not_a_name(self, api, owner, device_factory):
        device_factory(owner)
        response = api(owner).post("/api/v1/experiments/", {
            "name": 123, "algorithm": "fedavg", "config": {"rounds": 1}})
        assert response.status_code == 400
        assert response.json() == {"name": ["Must be a string."]}

    def test_a_number_is_not_a_username(self, api):
        response = api().post("/api/v1/auth/token/", {"username": 123, "password": "x"})
        assert response.status_code == 400
        assert response.json() == {"username": ["Must be a string."]}

    def test_a_number_is_not_a_device_name(self, api, owner, device_factory):
        agent = device_factory(owner)
        response = api(owner).patch(f"/api/v1/devices/{agent.device.id}/", {"name": 42})
        assert response.status_code == 400
        assert response.json() == {"name": ["Must be a string."]}

    @pytest.mark.parametrize("field, value", [("value", "0.5"), ("step", "7"), ("step", True),
                                              ("sim_time_s", False), ("name", 5)])
    def test_metric_fields_keep_their_json_types(self, api, owner, device_factory,
                                                 experiment_factory, field, value):
        agent = device_factory(owner)
        run = Run.objects.get(experiment=experiment_factory(owner, host=agent.device))
        bad = {**point(step=1), field: value}
        response = api(device=agent.credential).post(f"/api/v1/runs/{run.id}/metrics/",
                                                     {"points": [point(step=2), bad]})
        assert response.status_code == 400
        assert list(response.json()["points"]["1"]) == [field]
        assert not MetricPoint.objects.filter(run=run).exists()

    @pytest.mark.parametrize("preset", ["jetson80:server_mbps=inf", "jetson80:server_mbps=nan"])
    def test_a_preset_parameter_must_be_finite_and_is_named(self, api, owner, device_factory,
                                                            preset):
        device_factory(owner)
        response = api(owner).post("/api/v1/experiments/", {
            "name": "n", "algorithm": "fedavg", "config": {"rounds": 1, "testbed": preset}})
        assert response.status_code == 400
        message = response.json()["config"]["testbed"][0]
        assert "server_mbps" in message and "uplink_mbps" not in message


@pytest.mark.django_db
class TestCsvInjection:
    def test_formulas_in_names_are_exported_as_text_and_numbers_stay_numbers(
            self, api, owner, device_factory, experiment_factory):
        agent = device_factory(owner)
        experiment = experiment_factory(owner, host=agent.device,
                                        name='=HYPERLINK("http://evil.example","x")')
        run = Run.objects.get(experiment=experiment)
        MetricPoint.objects.create(run=run, name="-loss", step=1, value=-2.5, sim_time_s=1,
                                   wall_time_s=1)
        api_csv = api(owner).get(f"/api/v1/experiments/{experiment.id}/results/?format=csv")
        header, row = list(csv.reader(io.StringIO(api_csv.content.decode())))
        assert header[-1] == "'-loss" and row[-1] == "-2.5"

        client = api()
        client.force_login(owner)
        page_csv = client.get("/results/export.csv")
        assert page_csv.status_code == 200
        header, row = list(csv.reader(io.StringIO(page_csv.content.decode())))
        assert row[header.index("experiment_name")] == "'" + experiment.name
        assert row[header.index("'-loss")] == "-2.5"


@pytest.mark.django_db
class TestSharedWireRules:
    @pytest.mark.parametrize("name", ["accuracy (%)", "", "x" * 101, "loss\n"])
    def test_a_metric_name_the_server_refuses_the_cli_refuses_too(self, api, owner,
                                                                  device_factory,
                                                                  experiment_factory, name):
        from ml.reporting import MemoryReporter
        from ml.wire import WireError

        with pytest.raises(WireError) as refused:
            MemoryReporter().metric(name, 1, 0.5, 1.0)
        assert refused.value.field == "name"

        agent = device_factory(owner)
        run = Run.objects.get(experiment=experiment_factory(owner, host=agent.device))
        response = api(device=agent.credential).post(f"/api/v1/runs/{run.id}/metrics/",
                                                     {"points": [point(name)]})
        assert response.status_code == 400
        assert list(response.json()["points"]["0"]) == ["name"]


@pytest.mark.django_db(transaction=True)
class TestWebSocketInput:
    def test_a_deep_message_from_the_browser_is_ignored_unparsed(self, asgi_server, owner,
                                                                 device_factory,
                                                                 experiment_factory):
        import asyncio

        import requests
        from django.test import Client

        from tests.fixtures.servers import ws_connect

        agent = device_factory(owner)
        run = Run.objects.get(experiment=experiment_factory(owner, host=agent.device))
        client = Client()
        client.force_login(owner)
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        url = f"{asgi_server.replace('http://', 'ws://')}/ws/experiments/{run.experiment_id}/"

        def post_point() -> None:
            answer = requests.post(f"{asgi_server}/api/v1/runs/{run.id}/metrics/",
                                   json={"points": [point(step=1)]}, timeout=10,
                                   headers={"Authorization": f"Device {agent.credential}"})
            assert answer.status_code == 200, answer.text

        async def watch():
            async with ws_connect(url, cookie=cookie, origin=asgi_server) as ws:
                assert (await ws.receive_json())["type"] == "history"
                await ws.connection.send("[" * 100_000 + "]" * 100_000)
                await asyncio.get_running_loop().run_in_executor(None, post_point)
                return await ws.receive_json()  # the socket is still open and live

        assert asyncio.run(watch())["type"] == "points"
