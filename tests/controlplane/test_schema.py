"""GET /api/schema/: the OpenAPI document covers the API and needs a login."""
import pytest
import yaml


@pytest.mark.django_db
class TestSchema:
    def test_it_describes_every_endpoint(self, api, owner):
        response = api(owner).get("/api/schema/")
        assert response.status_code == 200
        schema = yaml.safe_load(response.content)
        assert schema["openapi"].startswith("3.")
        paths = schema["paths"]
        for path in ["/api/v1/agents/enrol/", "/api/v1/agents/heartbeat/",
                     "/api/v1/agents/jobs/{job_id}/start/", "/api/v1/experiments/",
                     "/api/v1/experiments/{id}/cancel/", "/api/v1/runs/{run_id}/metrics/"]:
            assert path in paths
        assert "deviceCredential" in schema["components"]["securitySchemes"]

    def test_it_refuses_anonymous_users(self, api):
        assert api().get("/api/schema/").status_code == 401


@pytest.fixture
def schema(api, owner) -> dict:
    return yaml.safe_load(api(owner).get("/api/schema/").content)


@pytest.mark.django_db
class TestSchemaIsTheTruth:
    def test_strict_request_bodies_refuse_unknown_fields(self, schema, api, owner):
        body = schema["components"]["schemas"]["ExperimentCreateRequest"]
        assert body["additionalProperties"] is False
        answer = api(owner).post("/api/v1/experiments/", {"name": "x", "algorithm": "fedavg",
                                                          "colour": "blue"})
        assert answer.json()["colour"] == ["Unknown field."]

    def test_answers_are_not_extended_by_the_strictness_of_requests(self, schema):
        assert "additionalProperties" not in schema["components"]["schemas"]["Point"]

    def test_a_job_without_a_device_has_a_null_device_name(self, schema):
        assert schema["components"]["schemas"]["Job"]["properties"]["device_name"]["nullable"]

    @pytest.mark.parametrize("method, path, statuses", [
        ("post", "/api/v1/agents/jobs/{job_id}/start/", {"401", "403", "404", "409"}),
        ("post", "/api/v1/agents/jobs/{job_id}/finish/", {"400", "404", "409"}),
        ("delete", "/api/v1/devices/{id}/", {"404", "409"}),
        ("post", "/api/v1/auth/token/", {"400", "429"}),
        ("get", "/api/v1/experiments/", {"400", "404"}),
        ("post", "/api/v1/agents/enrol/", {"400", "401"}),
    ])
    def test_error_answers_are_declared(self, schema, method, path, statuses):
        assert statuses <= set(schema["paths"][path][method]["responses"])

    def test_lists_are_declared_paginated(self, schema):
        answer = schema["paths"]["/api/v1/experiments/"]["get"]["responses"]["200"]
        ref = answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert {"count", "next", "previous", "results"} <= set(
            schema["components"]["schemas"][ref]["properties"])
