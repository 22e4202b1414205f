"""``./estuary test``: run the whole pytest suite, with a Redis of our own if none is around.

Tests use ``REDIS_URL``; when it is unset and nothing listens on 127.0.0.1:6379 (the default),
a throw-away Redis starts on a free port for the run and stops after it.

The suite runs on :data:`WORKERS` pytest-xdist workers, a test file to each at a time: most of
its time is spent waiting on the processes it starts (servers, agents, a browser), so two
workers keep both cores of a CI machine busy. Each worker is a test session of its own (its
database, Redis database, servers and broker users). Passing ``-n``/``--numprocesses`` (``-n 0``:
one process) or ``-p no:xdist`` overrides it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agents.stack.processes import Supervisor
from agents.stack.redis import free_port, is_listening, redis_argv, wait_for_redis


#: pytest-xdist workers ``./estuary test`` runs by default (CI's machine has two cores).
WORKERS = 2
#: The slowest tests are listed at the end of every run, to see where the time goes.
DURATIONS = 25


def default_args(pytest_args: list[str]) -> list[str]:
    """``pytest_args`` with the suite's defaults (workers, a file to a worker, the slowest
    tests listed) in front, unless the caller chose the number of workers itself."""
    chosen = any(arg.startswith(("-n", "--numprocesses")) or arg.endswith("no:xdist")
                 for arg in pytest_args)
    extra = [] if chosen else ["-n", str(WORKERS), "--dist", "loadfile"]
    return [*extra, f"--durations={DURATIONS}", *pytest_args]


def run_tests(pytest_args: list[str], root: Path, data_dir: Path) -> int:
    """Run ``python -m pytest`` with :func:`default_args` in ``root``; returns pytest's exit
    status."""
    env = dict(os.environ)
    supervisor = Supervisor(data_dir / "log")
    try:
        if not env.get("REDIS_URL") and not is_listening("127.0.0.1", 6379):
            port = free_port()
            redis_dir = data_dir / "test-redis"
            redis_dir.mkdir(parents=True, exist_ok=True)
            supervisor.start("test-redis", redis_argv(port, redis_dir, persist=False))
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            print(f"no Redis configured: started one on port {port} for the tests", flush=True)
            wait_for_redis(env["REDIS_URL"])
        pytest = subprocess.Popen([sys.executable, "-m", "pytest", *default_args(pytest_args)],
                                  cwd=root, env=env)
        # Ctrl-C reaches pytest from the terminal; SIGTERM is passed on. Either way we wait for it.
        signal.signal(signal.SIGINT, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda signum, _: pytest.send_signal(signum))
        return pytest.wait()
    finally:
        supervisor.stop_all(timeout_s=10)
