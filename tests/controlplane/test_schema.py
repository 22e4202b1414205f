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
