"""The ASGI server in one or more processes: ``python -m controlplane.serve``.

One daphne process runs its Python on one core at a time: twenty dashboard clients polling the
experiment list at once queued behind each other there (issue #20). ``--processes N`` binds the
address once and starts N daphne processes on that one listening socket (``daphne --fd``); the
kernel hands each new connection to one of them. Every process is a whole server: its own
database lanes (controlplane.db_lane), its own subscription to Redis for the live fan-out
(controlplane.metrics.fanout: a socket's events reach it whichever process took the POST), its
own uptime marks. Nothing one process needs is kept in another's memory: sessions, login
failures, queues and jobs live in the database, live events in Redis. A WebSocket stays on the
process that accepted it.

A process that dies is started again (after 1 s, doubling up to 30 s; back to 1 s after a
minute's run); SIGTERM or SIGINT stops them all. With one process this is plain daphne, as
before (``exec``, same pid).

    python -m controlplane.serve [--host 127.0.0.1] [--port 8000] [--processes N]

``--processes`` defaults to ``ESTUARY_WEB_PROCESSES``, else 1.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

APPLICATION = "controlplane.asgi:application"
#: Restart backoff of a dead server process: first delay, cap, and the run that resets it.
BACKOFF_FIRST_S, BACKOFF_CAP_S, HEALTHY_AFTER_S = 1.0, 30.0, 60.0
MAX_PROCESSES = 64


def processes_from_env() -> int:
    """``ESTUARY_WEB_PROCESSES`` (1 to 64), else 1; anything else is refused, naming it."""
    raw = os.environ.get("ESTUARY_WEB_PROCESSES", "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PROCESSES:
        raise SystemExit(f"ESTUARY_WEB_PROCESSES must be an integer from 1 to {MAX_PROCESSES}, "
                         f"not {raw!r}")
    return value


def listening_socket(host: str, port: int) -> socket.socket:
    """The one socket every server process accepts on, inheritable by them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.create_server((host, port), family=family, backlog=1024)
    server.set_inheritable(True)
    return server


class Servers:
    """``count`` daphne processes sharing the listening socket ``fd``; restarts dead ones."""

    def __init__(self, fd: int, count: int, application: str = APPLICATION) -> None:
        self.argv = [sys.executable, "-m", "daphne", "--fd", str(fd), application]
        self.fd = fd
        self.processes: list[subprocess.Popen | None] = [None] * count
        self.started = [0.0] * count
        self.failures = [0] * count
        self.restart_at: list[float | None] = [0.0] * count
        self.stopping = False

    def step(self, now: float) -> None:
        """Start the processes that are due; schedule dead ones for a restart."""
        for index, process in enumerate(self.processes):
            if process is not None and process.poll() is not None:
                if now - self.started[index] >= HEALTHY_AFTER_S:
                    self.failures[index] = 0
                delay = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** self.failures[index])
                self.failures[index] += 1
                print(f"server process {process.pid} exited with status {process.returncode}; "
                      f"starting another in {delay:.0f} s", file=sys.stderr, flush=True)
                self.processes[index], self.restart_at[index] = None, now + delay
            due = self.restart_at[index]
            if self.processes[index] is None and due is not None and now >= due:
                self.processes[index] = subprocess.Popen(self.argv, pass_fds=(self.fd,))
                self.started[index], self.restart_at[index] = now, None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every process, wait for them, SIGKILL what is left."""
        live = [process for process in self.processes if process is not None]
        for process in live:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in live:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--processes", type=int, default=None,
                        help="server processes (default: ESTUARY_WEB_PROCESSES, else 1)")
    parser.add_argument("--application", default=APPLICATION)
    args = parser.parse_args(argv)
    count = processes_from_env() if args.processes is None else args.processes
    if not 1 <= count <= MAX_PROCESSES:
        parser.error(f"--processes must be from 1 to {MAX_PROCESSES}")
    if count == 1:
        os.execv(sys.executable, [sys.executable, "-m", "daphne", "-b", args.host,
                                  "-p", str(args.port), args.application])
    server = listening_socket(args.host, args.port)
    servers = Servers(server.fileno(), count, args.application)

    def stop(signum, frame) -> None:
        servers.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving on {args.host}:{args.port} with {count} processes", file=sys.stderr,
          flush=True)
    while not servers.stopping:
        servers.step(time.monotonic())
        time.sleep(0.2)
    servers.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
