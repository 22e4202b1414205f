"""The client covers the API: every operation of the OpenAPI schema has a client method (or is
an agent's, with a method on ``agents.client.ControlPlane``), and every method's HTTP method and
path are in the schema."""
import inspect

import pytest
from drf_spectacular.generators import SchemaGenerator

from agents.client import ControlPlane
from estuary_client import Client
from estuary_client.operations import AGENT_OPERATIONS, OPERATIONS


@pytest.fixture(scope="module")
def schema_operations() -> set[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {(method.upper(), path) for path, item in schema["paths"].items()
            for method in item if method in ("get", "post", "put", "patch", "delete")}


def test_it_has_a_method_for_every_operation_of_the_schema(schema_operations):
    covered = set(OPERATIONS.values()) | set(AGENT_OPERATIONS.values())
    missing = schema_operations - covered
    assert not missing, f"operations without a client method: {sorted(missing)}"


def test_each_method_calls_an_operation_the_schema_has(schema_operations):
    unknown = {name: op for name, op in {**OPERATIONS, **AGENT_OPERATIONS}.items()
               if tuple(op) not in schema_operations}
    assert not unknown, f"client methods whose operation the schema lacks: {unknown}"


def test_every_operation_in_the_table_is_a_method():
    for name in OPERATIONS:
        assert inspect.isfunction(getattr(Client, name, None)), f"Client.{name} is missing"
        assert f'"{name}"' in inspect.getsource(getattr(Client, name)), \
            f"Client.{name} does not call its own operation"
    for name in AGENT_OPERATIONS:
        assert inspect.isfunction(getattr(ControlPlane, name, None)), \
            f"ControlPlane.{name} is missing"


def test_the_check_would_catch_a_wrong_path(schema_operations):
    # The table is compared as (method, path): a method on the wrong verb is not covered.
    assert ("GET", "/api/v1/experiments/{id}/rerun/") not in schema_operations
    assert tuple(OPERATIONS["rerun_experiment"]) in schema_operations
