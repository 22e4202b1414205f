"""A job's method (emulated) or role (distributed) runs in a child process of the agent.

Why a child: cancelling or failing a run must never wedge the agent. A role blocked in a gloo
collective, a store wait or a stuck data loader cannot be interrupted from inside; the agent
kills its child instead (SIGTERM, then SIGKILL) and is free for the next job at once.

The child talks to the agent through one pipe (child → agent) and one shared byte (agent →
child), never through locks the child could die holding:
- :class:`ChildReporter` (the method's Reporter in the child) checks each point as the control
  plane would and sends ``("metric", ...)`` / ``("log", ...)``; the agent's
  :class:`~agents.reporter.HttpReporter` posts and spools them, so a point the child sent is
  never lost with it. ``should_stop()`` reads the shared byte the agent sets on cancel.
- The coordinator's ``on_store_ready(port)`` sends ``("store_ready", port)``; the agent reports
  the port to the control plane.
- The child's last message is ``("end", state, error, result)``.

Children are forked by a forkserver (:func:`role_context`) that preloaded torch and the method
catalogue, so starting one costs a fork, not an import of torch (the agent logs the cost).
The child dies with the forkserver (``PR_SET_PDEATHSIG``), which exits when its agent dies:
a ``kill -9`` of the agent leaves no role running.
"""
from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from ml import wire

log = logging.getLogger(__name__)

#: Modules the forkserver imports once, so every child starts with them loaded.
PRELOAD = ["agents.child", "agents.preload"]
#: After a stop request, how long a role may take to stop by itself before SIGTERM; then how
#: long after SIGTERM before SIGKILL.
STOP_GRACE_S = 3.0
KILL_GRACE_S = 2.0

_context: multiprocessing.context.BaseContext | None = None


def role_context() -> multiprocessing.context.BaseContext:
    """The forkserver context with :data:`PRELOAD`; its server starts at the first call."""
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        _context = context
    return _context


def start_forkserver() -> None:
    """Start the forkserver now: it imports torch and the catalogue (seconds) while the agent
    does the same, rather than when the first job waits for it."""
    role_context()
    from multiprocessing import forkserver

    forkserver.ensure_running()


def warm_up() -> float:
    """Fork one empty child (waits for the forkserver's preload); returns its cost in s."""
    started = time.perf_counter()
    child = role_context().Process(target=_nothing, name="estuary-role-warm-up")
    child.start()
    child.join()
    return time.perf_counter() - started


def _nothing() -> None:
    pass


# -- the child's side ---------------------------------------------------------------------------

class ChildReporter:
    """The Reporter a method gets in the child: everything goes to the agent through the pipe."""

    def __init__(self, conn: multiprocessing.connection.Connection, stop_flag: Any):
        self.conn = conn
        self.stop_flag = stop_flag

    def metric(self, name: str, step: int, value: float, sim_time_s: float) -> None:
        point = wire.check_point(name, step, value, sim_time_s)  # fail the method, not a batch
        self.conn.send(("metric", point["name"], point["step"], point["value"],
                        point["sim_time_s"]))

    def log(self, message: str) -> None:
        self.conn.send(("log", str(message)))

    def should_stop(self) -> bool:
        return bool(self.stop_flag.value)


def _die_with_parent() -> None:
    """SIGKILL this process when its parent (the forkserver) exits (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def child_main(spec: dict[str, Any], rendezvous: dict[str, Any] | None, shape: bool,
               conn: multiprocessing.connection.Connection, stop_flag: Any) -> None:
    """The child process: run the job's method or role, send its outcome, exit."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when its roles stop
    conn.send(("ready", time.time()))
    reporter = ChildReporter(conn, stop_flag)
    try:
        state, error, result = _run(spec, rendezvous, shape, reporter, conn)
    except BrokenPipeError:
        os._exit(1)  # the agent is gone: nobody to report to
    try:
        conn.send(("end", state, error, result))
        conn.close()
    except (BrokenPipeError, OSError):
        pass
    os._exit(0)  # skip torch's slow teardown; everything was sent


def _run(spec: dict[str, Any], rendezvous: dict[str, Any] | None, shape: bool,
         reporter: ChildReporter, conn: multiprocessing.connection.Connection
         ) -> tuple[str, str, dict]:
    from ml import registry
    from ml.reporting import Cancelled

    method_name = spec.get("method", "")
    try:
        method = registry.get(method_name)
        config = method.parse_config(spec.get("config") or {})
        if spec.get("execution") == "distributed":
            result = _run_role(spec, rendezvous, shape, reporter, conn)
        else:
            # The config itself is on the experiment page, as a table.
            reporter.log(f"{method_name} starting on this agent "
                         f"(seed {getattr(config, 'seed', '?')})")
            result = method.run(config, reporter)
        json.dumps(result)  # the finish body must be JSON; fail here, not in requests
    except Cancelled:
        return "cancelled", "", {}
    except registry.UnknownMethod:
        return "failed", f"unknown method {method_name!r} on this agent", {}
    except BrokenPipeError:
        raise
    except Exception as exc:
        reporter.log(traceback.format_exc())
        return "failed", f"{type(exc).__name__}: {exc}"[:2000], {}
    return "succeeded", "", result


def _run_role(spec: dict[str, Any], rendezvous: dict[str, Any] | None, shape: bool,
              reporter: ChildReporter, conn: multiprocessing.connection.Connection) -> dict:
    from ml import distributed

    placement = [distributed.Slot.from_dict(slot) for slot in spec["placement"]]
    rank = int(spec["rank"])
    mine = next(slot for slot in placement if slot.rank == rank)
    link = distributed.LinkShape.of_profile(mine.profile) if shape else None
    reporter.log(f"{spec['method']} rank {rank} ({mine.role}) starting on this agent"
                 + (f", shaped to {link}" if link else ""))
    return distributed.run_role(
        spec["method"], spec["config"], placement, rank, distributed.Rendezvous(**rendezvous),
        reporter, on_store_ready=lambda port: conn.send(("store_ready", int(port))),
        shape=link)


# -- the agent's side ---------------------------------------------------------------------------

@dataclass
class Outcome:
    state: str
    error: str
    result: dict


class RoleProcess:
    """One job's child process, seen from the agent."""

    def __init__(self, spec: dict[str, Any], rendezvous: dict[str, Any] | None = None,
                 shape: bool = False):
        context = role_context()
        self._reader, writer = context.Pipe(duplex=False)
        self._stop_flag = context.RawValue("b", 0)  # no lock a dying child could hold
        self.process = context.Process(
            target=child_main, args=(spec, rendezvous, shape, writer, self._stop_flag),
            name=f"estuary-role-{spec.get('run_id', '')[:8]}", daemon=False)
        self._started = time.perf_counter()
        self.process.start()
        writer.close()  # ours: only the child writes, so EOF means it is gone
        self.start_cost_s: float | None = None
        self._stop_requested: float | None = None
        self._terminated: float | None = None

    def request_stop(self) -> None:
        """Ask the role to stop (its should_stop() turns true); it is killed if it does not."""
        if self._stop_requested is None:
            self._stop_flag.value = 1
            self._stop_requested = time.monotonic()

    def _enforce_stop(self) -> None:
        if self._stop_requested is None or not self.process.is_alive():
            return
        waited = time.monotonic() - self._stop_requested
        if self._terminated is None and waited > STOP_GRACE_S:
            log.info("role process %s did not stop in %.0f s; SIGTERM", self.process.pid,
                     STOP_GRACE_S)
            self.process.terminate()
            self._terminated = time.monotonic()
        elif self._terminated is not None and time.monotonic() - self._terminated > KILL_GRACE_S:
            log.warning("role process %s ignored SIGTERM; SIGKILL", self.process.pid)
            self.process.kill()

    def follow(self, on_message: Callable[[tuple], None],
               should_stop: Callable[[], bool]) -> Outcome | None:
        """Pass the child's messages to ``on_message`` until it exits; returns its ``end``
        outcome, or None when it died without one. Applies ``should_stop`` on the way."""
        outcome = None
        while True:
            if should_stop():
                self.request_stop()
            self._enforce_stop()
            try:
                if not self._reader.poll(0.2):
                    if not self.process.is_alive() and not self._reader.poll(0):
                        break
                    continue
                message = self._reader.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "ready":
                self.start_cost_s = time.perf_counter() - self._started
                log.info("role process %s started in %.0f ms", self.process.pid,
                         1000 * self.start_cost_s)
            elif kind == "end":
                outcome = Outcome(message[1], message[2], message[3])
            else:
                on_message(message)
        self.process.join(KILL_GRACE_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._reader.close()
        return outcome

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode
