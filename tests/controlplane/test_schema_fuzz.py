"""Schemathesis against the real Django stack: the published schema is what the server does.

Every operation of ``/api/schema/`` is called with generated requests (valid and invalid) as
an authenticated user who owns a device and an experiment; any 5xx, an undocumented status
code or a response that does not match its declared schema fails the test.
"""
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from controlplane.wsgi import application

#: Examples per operation: the whole run stays well under a minute. To explore further, set
#: ESTUARY_FUZZ_EXAMPLES (and ESTUARY_FUZZ_RANDOM=1 for new examples on each run).
EXAMPLES_PER_OPERATION = int(os.environ.get("ESTUARY_FUZZ_EXAMPLES", "15"))
RANDOM = os.environ.get("ESTUARY_FUZZ_RANDOM") == "1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
def wsgi_app():
    """The WSGI app, called in this process on the test's database connection (as Django's
    test client does, its end-of-request signal must not close that connection)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield application
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def agent(owner, device_factory, experiment_factory):
    """The owner's device, hosting one of the owner's experiments."""
    agent = device_factory(owner)
    experiment_factory(owner, host=agent.device, baselines=[], config={"rounds": 1})
    return agent


@pytest.fixture
def api_schema(wsgi_app, owner, agent):
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", wsgi_app,
        headers={"Authorization": f"Token {owner.api_token}"})


def is_agent_endpoint(operation) -> bool:
    """Operations only a device may call (its credential, not a user's token)."""
    return operation.path.startswith("/api/v1/agents/") or (
        operation.method.upper() == "POST" and operation.path.startswith("/api/v1/runs/"))


@pytest.mark.django_db
def test_the_server_answers_as_its_schema_says(api_schema, owner, agent):
    # One Hypothesis run per operation (schemathesis's pytest plugin predates pytest 9).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:
        headers = {"Authorization": f"Device {agent.credential}" if is_agent_endpoint(operation)
                   else f"Token {owner.api_token}"}

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=not RANDOM,
                  database=None, suppress_health_check=list(HealthCheck))
        def answers_as_declared(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        answers_as_declared()
