"""Children of the stack: each in its own process group, logged to a file, supervised, stopped
in reverse.

Own process groups mean a Ctrl-C in the terminal reaches only the stack, which then stops its
children in order (agents before the server they report to, Redis last), and a child's own
children (Celery's pool) go with it. Nothing outside these groups is ever signalled.

Supervision (:meth:`Supervisor.supervise`): a child that dies is restarted after a backoff
(1 s, doubling up to 60 s; back to 1 s once it has run a minute), except one that stopped on
purpose: exit status 0 (someone stopped it) or :data:`agents.exit_status.CREDENTIAL_REFUSED`
(its device was deleted), which is left stopped. A child started with a progress mark (a file
it touches whenever it does its work) that goes untouched for ``max_silence_s`` is alive but
stuck (a Celery consumer that lost its broker and never reconnected): it is killed, and then
restarted like any dead child. Each decision is a line on the terminal and in the child's log.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from agents import exit_status

log = logging.getLogger(__name__)

#: Restart backoff: first delay, cap, and how long a child must run to count as healthy again.
BACKOFF_FIRST_S = 1.0
BACKOFF_CAP_S = 60.0
HEALTHY_AFTER_S = 60.0

#: Exit statuses meaning "stopped on purpose": the child is left stopped, with this reason.
LEFT_STOPPED = {
    exit_status.STOPPED: "it stopped on purpose (status 0)",
    exit_status.CREDENTIAL_REFUSED: "the control plane refused its credential (its device was "
                                    "deleted?); restarting it would not help",
}


@dataclass
class Child:
    """A process the stack started, and how to start it again."""

    name: str
    argv: list[str]
    env: dict[str, str] | None
    cwd: Path | None
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    started_at: float = 0.0
    failures: int = 0                 # restarts in a row without a healthy run between
    restart_at: float | None = None   # when a dead child starts again
    left_stopped: str | None = None   # why it is not restarted
    progress_mark: Path | None = None  # a file the child touches when it makes progress
    max_silence_s: float | None = None  # untouched this long (since its start): stuck
    started_wall: float = 0.0          # time.time() of the latest start (file times are wall)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.restart_at is None and self.left_stopped is None


class Supervisor:
    """Starts children, restarts those that die, and stops every one of them (and only them)."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None, progress_mark: Path | None = None,
              max_silence_s: float | None = None) -> Child:
        """Start ``argv`` in a new session; stdout and stderr go to ``<log_dir>/<name>.log``.
        With ``progress_mark``, the child counts as stuck once that file has not been touched
        for ``max_silence_s`` (counted from its start at the earliest)."""
        child = Child(name, list(argv), env, cwd, self.log_dir / f"{name}.log",
                      process=self._popen(self.log_dir / f"{name}.log", argv, env, cwd),
                      started_at=time.monotonic(), progress_mark=progress_mark,
                      max_silence_s=max_silence_s, started_wall=time.time())
        self.children.append(child)
        log.debug("started %s (pid %d)", name, child.pid)
        return child

    @staticmethod
    def _popen(log_path: Path, argv: list[str], env, cwd) -> subprocess.Popen:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # only ours
        with os.fdopen(fd, "ab") as log_file:
            log_file.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log_file.flush()
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True)

    def exited(self) -> Child | None:
        """The first child that has exited, if any (used while the stack starts)."""
        for child in self.children:
            if child.process.poll() is not None:
                return child
        return None

    def supervise(self, now: float | None = None) -> list[str]:
        """Handle children that died since the last call and restart those due; returns one
        line per decision (also written to the child's log)."""
        now = time.monotonic() if now is None else now
        lines = []
        for child in self.children:
            if child.left_stopped is not None:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.process = self._popen(child.log_path, child.argv, child.env, child.cwd)
                    child.started_at, child.restart_at = now, None
                    child.started_wall = time.time()
                    lines.append(self._note(child, f"restarted {child.name} (pid {child.pid})"))
                continue
            status = child.process.poll()
            if status is None:
                silence = self._silence_s(child)
                if silence is not None:
                    lines.append(self._note(child, f"{child.name} made no progress for "
                                                   f"{silence:.0f} s; killing it"))
                    _signal_group(child.pid, signal.SIGKILL)
                    status = child.process.wait()
                else:
                    continue
            _signal_group(child.pid, signal.SIGKILL)  # what is left of its group goes too
            how = (f"was killed by {_signal_name(-status)}" if status < 0
                   else f"exited with status {status}")
            if status in LEFT_STOPPED:
                child.left_stopped = LEFT_STOPPED[status]
                lines.append(self._note(child, f"{child.name} {how}; leaving it stopped: "
                                               f"{child.left_stopped}"))
                continue
            if now - child.started_at >= HEALTHY_AFTER_S:
                child.failures = 0
            delay = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** child.failures)
            child.failures += 1
            child.restart_at = now + delay
            lines.append(self._note(child, f"{child.name} {how}; restarting it in {delay:.0f} s"))
        return lines

    @staticmethod
    def _silence_s(child: Child) -> float | None:
        """How long a child with a progress mark has been stuck, or None if it is not."""
        if child.progress_mark is None or child.max_silence_s is None:
            return None
        try:
            touched = child.progress_mark.stat().st_mtime
        except FileNotFoundError:
            touched = 0.0
        silence = time.time() - max(touched, child.started_wall)
        return silence if silence > child.max_silence_s else None

    @staticmethod
    def _note(child: Child, line: str) -> str:
        with open(child.log_path, "a") as log_file:
            log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} supervisor: {line}\n")
        return line

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


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


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
