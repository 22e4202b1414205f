"""Shared test set-up. Process fixtures (Redis, ASGI server, Celery workers, agents) live in
tests/fixtures/ and are real processes, never mocks."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("ESTUARY_HEARTBEAT_INTERVAL_S", "1")
# Distributed runs: a gang's agents claim their jobs within 8 s, a lost peer shows in 15 s.
os.environ.setdefault("ESTUARY_GANG_CLAIM_DEADLINE_S", "8")
os.environ.setdefault("ESTUARY_RENDEZVOUS_TIMEOUT_S", "15")
# Every session starts without cached models or data, as CI's clean clone does, and never
# writes into the user's own data folder.
os.environ["ESTUARY_DATA_DIR"] = tempfile.mkdtemp(prefix="estuary-test-data-")
atexit.register(shutil.rmtree, os.environ["ESTUARY_DATA_DIR"], ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

# Two cores are shared by the test process and the servers it starts.
torch.set_num_threads(1)

pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.agents"]


@pytest.fixture
def registered():
    """``registered(method)``: a method in the catalogue for one test only (taken out again
    after it)."""
    from ml import registry

    added = []

    def add(method) -> None:
        registry.register(method)
        added.append(method.name)

    yield add
    for name in added:
        registry._METHODS.pop(name, None)
