"""Shared test set-up. Process fixtures (Redis, ASGI server, Celery workers, agents) live in
tests/fixtures/ and are real processes, never mocks."""
import os

os.environ.setdefault("ESTUARY_HEARTBEAT_INTERVAL_S", "1")

import torch  # noqa: E402

# Two cores are shared by the test process and the servers it starts.
torch.set_num_threads(1)

pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.agents"]
