"""The fault suite: real processes whose broker (a throw-away Redis) is stopped and restarted.

Every process under test here (daphne, agents) uses :func:`fault_redis`, never the shared
Redis: ``subprocess_env`` and ``asgi_server`` are overridden for this package, so
``agent_factory`` starts agents against this package's own server and broker. Experiments are
created through that server's API, so their jobs are dispatched to the same broker.
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.redis_server import RedisServer
from tests.fixtures.servers import Process, _answers_http, free_port, start_process


@dataclass
class FaultServer:
    """daphne on the fault suite's broker; ``access_log`` has one line per request."""

    url: str
    access_log: Path
    process: Process

    def statuses(self, path_pattern: str) -> Counter:
        """How often each status answered POSTs whose path matches ``path_pattern``."""
        found = Counter()
        pattern = re.compile(r'"POST (\S+)" (\d{3}) ')
        for match in pattern.finditer(self.access_log.read_text(errors="replace")):
            if re.search(path_pattern, match.group(1)):
                found[int(match.group(2))] += 1
        return found


@pytest.fixture(scope="package")
def fault_redis(tmp_path_factory) -> RedisServer:
    """A Redis of this package's own, which the tests stop and start."""
    server = RedisServer.start_new(tmp_path_factory.mktemp("fault-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="package")
def subprocess_env(subprocess_env, fault_redis) -> dict[str, str]:
    """The session's environment (same database), with the throw-away broker."""
    return {**subprocess_env, "REDIS_URL": fault_redis.url,
            "ESTUARY_PUBLIC_BROKER_URL": fault_redis.url}


@pytest.fixture(scope="package")
def fault_server(subprocess_env, tmp_path_factory) -> FaultServer:
    log_dir = tmp_path_factory.mktemp("fault-daphne")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    access_log = log_dir / "access.log"
    process = start_process(
        "daphne",
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "--access-log", str(access_log), "controlplane.asgi:application"],
        subprocess_env, log_dir, ready=_answers_http(f"{url}/api/v1/algorithms/"))
    yield FaultServer(url, access_log, process)
    process.stop()


@pytest.fixture(scope="package")
def asgi_server(fault_server) -> str:
    return fault_server.url
