"""Children of the stack: each in its own process group, logged to a file, stopped in reverse.

Own process groups mean a Ctrl-C in the terminal reaches only the stack, which then stops its
children in order (agents before the server they report to, Redis last), and a child's own
children (Celery's pool, beat) go with it. Nothing outside these groups is ever signalled.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Child:
    """A process the stack started."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


class Supervisor:
    """Starts children and stops every one of them (and only them)."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Child:
        """Start ``argv`` in a new session; stdout and stderr go to ``<log_dir>/<name>.log``."""
        log_path = self.log_dir / f"{name}.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # only ours
        with os.fdopen(fd, "ab") as log_file:
            log_file.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log_file.flush()
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                       stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                       start_new_session=True)
        child = Child(name, process, log_path)
        self.children.append(child)
        log.debug("started %s (pid %d)", name, process.pid)
        return child

    def exited(self) -> Child | None:
        """The first child that has exited, if any."""
        for child in self.children:
            if child.process.poll() is not None:
                return child
        return None

    def stop_all(self, timeout_s: float = 20.0) -> None:
        """SIGTERM each child's group, newest first, waiting for each; SIGKILL stragglers."""
        for child in reversed(self.children):
            self.stop(child, timeout_s)
        self.children.clear()

    def stop(self, child: Child, timeout_s: float) -> None:
        pgid = child.pid  # a session leader's pgid is its pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            child.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", child.name, timeout_s)
        # The leader is gone (or stuck); make sure nothing of its group lingers.
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_group(pgid, signal.SIGKILL)
        try:
            child.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) could not be stopped", child.name, child.pid)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
