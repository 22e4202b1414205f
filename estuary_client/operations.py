"""Every REST operation the client calls, by client method: ``(HTTP method, path template)``.

``tests/estuary_client/test_schema_coverage.py`` checks this table against the server's
OpenAPI schema both ways: an operation without a method here (or in :data:`AGENT_OPERATIONS`)
fails, and so does a method whose HTTP method or path the schema does not have.
"""
from __future__ import annotations

from typing import NamedTuple


class Operation(NamedTuple):
    method: str
    path: str


#: :class:`estuary_client.Client` method name -> the operation it calls.
OPERATIONS: dict[str, Operation] = {
    "login": Operation("POST", "/api/v1/auth/token/"),
    "list_devices": Operation("GET", "/api/v1/devices/"),
    "get_device": Operation("GET", "/api/v1/devices/{id}/"),
    "update_device": Operation("PATCH", "/api/v1/devices/{id}/"),
    "delete_device": Operation("DELETE", "/api/v1/devices/{id}/"),
    "list_algorithms": Operation("GET", "/api/v1/algorithms/"),
    "get_algorithm": Operation("GET", "/api/v1/algorithms/{name}/"),
    "list_enrolment_tokens": Operation("GET", "/api/v1/enrolment-tokens/"),
    "create_enrolment_token": Operation("POST", "/api/v1/enrolment-tokens/"),
    "revoke_enrolment_token": Operation("POST", "/api/v1/enrolment-tokens/{id}/revoke/"),
    "list_experiments": Operation("GET", "/api/v1/experiments/"),
    "create_experiment": Operation("POST", "/api/v1/experiments/"),
    "get_experiment": Operation("GET", "/api/v1/experiments/{id}/"),
    "cancel_experiment": Operation("POST", "/api/v1/experiments/{id}/cancel/"),
    "rerun_experiment": Operation("POST", "/api/v1/experiments/{id}/rerun/"),
    "experiment_results": Operation("GET", "/api/v1/experiments/{id}/results/"),
    "experiment_points": Operation("GET", "/api/v1/experiments/{id}/points/"),
    "list_runs": Operation("GET", "/api/v1/runs/"),
    "get_run": Operation("GET", "/api/v1/runs/{id}/"),
    "run_metrics": Operation("GET", "/api/v1/runs/{run_id}/metrics/"),
    "run_logs": Operation("GET", "/api/v1/runs/{run_id}/logs/"),
}

#: Operations only agents call, with their device credential: ``agents.client.ControlPlane``
#: method name -> the operation. A user's token is refused on them.
AGENT_OPERATIONS: dict[str, Operation] = {
    "enrol": Operation("POST", "/api/v1/agents/enrol/"),
    "heartbeat": Operation("POST", "/api/v1/agents/heartbeat/"),
    "start_job": Operation("POST", "/api/v1/agents/jobs/{job_id}/start/"),
    "finish_job": Operation("POST", "/api/v1/agents/jobs/{job_id}/finish/"),
    "report_store_port": Operation("POST", "/api/v1/agents/jobs/{job_id}/rendezvous/"),
    "rendezvous": Operation("GET", "/api/v1/agents/jobs/{job_id}/rendezvous/"),
    "post_metrics": Operation("POST", "/api/v1/runs/{run_id}/metrics/"),
    "post_logs": Operation("POST", "/api/v1/runs/{run_id}/logs/"),
}
