"""Every rank of a distributed run as a child process on 127.0.0.1 (tests, bench, the CLI).

Each rank runs ``python -m ml.distributed SPEC RANK``: it reads the run from the JSON file
``SPEC``, runs :func:`run_role` and writes its outcome to ``<dir>/rank-<r>.json``; rank 0
writes the store's port to ``<dir>/port`` as soon as it listens and appends its metric points
to ``<dir>/points.jsonl`` as they come. Rank 0 stops (cancels) once ``<dir>/stop`` exists.
Only JSON crosses between the processes.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ml import registry
from ml.distributed.errors import PeerLost, RemoteError
from ml.distributed.placement import Slot, single_device_placement
from ml.distributed.shaping import LinkShape
from ml.reporting import Cancelled, MemoryReporter, MetricPoint
from ml.testbed.presets import resolve_testbed

ROOT = Path(__file__).resolve().parents[2]


def local_placement(method: str, config: dict, world_size: int) -> list[Slot]:
    """Rank 0 = the config testbed's server; ranks 1..k host virtual worker ``w`` at rank
    ``1 + w % k`` and are named (and shaped) after the first worker device they host. A
    single-device method gets one rank, whatever ``world_size``."""
    entry = registry.get(method)
    parsed = entry.parse_config(config)
    if entry.program is None:  # single-device: the whole run on the testbed's first device
        testbed = resolve_testbed(parsed.testbed)
        host = (testbed.workers or [testbed.server])[0]
        return single_device_placement({"device": "local-0", "name": host.name,
                                        "profile": _entry(host)})
    if world_size < 2:
        raise ValueError(f"a distributed run needs world_size >= 2, got {world_size}")
    testbed = resolve_testbed(parsed.testbed, parsed.workers)
    server = testbed.require_server()
    workers = testbed.workers
    k = min(world_size - 1, len(workers))
    slots = [Slot("coordinator", 0, "local-0", server.name, _entry(server), ())]
    for r in range(1, k + 1):
        hosted = tuple(range(r - 1, len(workers), k))
        first = workers[hosted[0]]
        slots.append(Slot("worker", r, f"local-{r}", first.name, _entry(first), hosted))
    return slots


def _entry(device) -> dict:
    p = device.profile
    return {"profile": p.name, "name": device.name, "compute_gflops": p.compute_gflops,
            "memory_mib": p.memory_mib, "uplink_mbps": p.uplink_mbps,
            "downlink_mbps": p.downlink_mbps, "rtt_ms": p.rtt_ms}


class LocalLaunch:
    """A distributed run as local processes; :meth:`start`, then :meth:`wait`."""

    def __init__(self, method: str, config: dict, world_size: int, *, shape: bool = False,
                 timeout_s: float = 30.0, workdir: Path | None = None):
        self.method = method
        self.config = config
        self.placement = local_placement(method, config, world_size)
        self.shape = shape
        self.timeout_s = timeout_s
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="estuary-dist-"))
        self.procs: dict[int, subprocess.Popen] = {}

    def _spawn(self, spec: Path, rank: int) -> None:
        env = {**os.environ, "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                           os.environ.get("PYTHONPATH")]))}
        log = open(self.dir / f"rank-{rank}.log", "wb")
        self.procs[rank] = subprocess.Popen(
            [sys.executable, "-m", "ml.distributed", str(spec), str(rank)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self) -> "LocalLaunch":
        """Start every rank at once; the workers wait for rank 0's port file."""
        spec = self.dir / "spec.json"
        spec.write_text(json.dumps({
            "method": self.method, "config": self.config, "shape": self.shape,
            "placement": [s.as_dict() for s in self.placement],
            "rendezvous": {"host": "127.0.0.1", "port": 0,
                           "prefix": f"run-{secrets.token_hex(16)}/",
                           "timeout_s": self.timeout_s}}))
        for slot in self.placement:
            self._spawn(spec, slot.rank)
        return self

    def pid(self, rank: int) -> int:
        return self.procs[rank].pid

    def log(self, rank: int) -> str:
        path = self.dir / f"rank-{rank}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def points(self) -> list[MetricPoint]:
        path = self.dir / "points.jsonl"
        if not path.exists():
            return []
        return [MetricPoint(**json.loads(line)) for line in path.read_text().splitlines()
                if line.endswith("}")]

    def stop(self) -> None:
        """Ask rank 0 to cancel the run (its reporter's should_stop() turns true)."""
        (self.dir / "stop").touch()

    def outcome(self, rank: int) -> dict | None:
        path = self.dir / f"rank-{rank}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def wait(self, timeout_s: float | None = None) -> dict[int, dict | None]:
        """Wait for every rank to exit; each rank's outcome (None: it died without one)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for rank, proc in self.procs.items():
            left = None if deadline is None else max(deadline - time.monotonic(), 0.1)
            try:
                proc.wait(left)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"rank {rank} did not exit in time") from None
        return {rank: self.outcome(rank) for rank in self.procs}

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def raise_outcome(outcome: dict | None, rank: int) -> None:
    """Re-raise a rank's failure as the exception it was."""
    if outcome is None:
        raise RuntimeError(f"rank {rank} died without an outcome")
    if outcome.get("ok"):
        return
    kind, message = outcome.get("error_type"), outcome.get("error", "")
    if kind == "PeerLost":
        raise PeerLost.from_dict(outcome["lost"])
    if kind == "Cancelled":
        raise Cancelled()
    if kind == "RemoteError":
        raise RemoteError(message)
    raise RuntimeError(f"rank {rank} failed: {kind}: {message}")


def launch_local(method: str, config: dict, world_size: int, *, shape: bool = False,
                 timeout_s: float = 30.0) -> tuple[dict, MemoryReporter]:
    """Run ``method`` with ``world_size`` ranks as local child processes on 127.0.0.1.

    Returns rank 0's summary and a reporter holding its metric points; raises the run's
    failure (PeerLost, Cancelled, RemoteError, RuntimeError) when a rank failed.
    """
    launch = LocalLaunch(method, config, world_size, shape=shape, timeout_s=timeout_s)
    try:
        launch.start()
        outcomes = launch.wait()
        failed = [r for r, o in outcomes.items() if not (o and o.get("ok"))]
        if failed:
            first = 0 if 0 in failed else failed[0]
            if outcomes.get(first) is None:
                raise RuntimeError(f"rank {first} died: {launch.log(first)[-3000:]}")
            raise_outcome(outcomes[first], first)
        reporter = MemoryReporter()
        reporter.points.extend(launch.points())
        return outcomes[0]["result"], reporter
    finally:
        launch.kill()
        shutil.rmtree(launch.dir, ignore_errors=True)


class _FileReporter(MemoryReporter):
    """Rank 0's reporter in a local child: points to a JSONL file, stop on a file."""

    def __init__(self, directory: Path):
        super().__init__()
        self._points = open(directory / "points.jsonl", "a", buffering=1)
        self._stop = directory / "stop"

    def metric(self, name, step, value, sim_time_s) -> None:
        super().metric(name, step, value, sim_time_s)
        self._points.write(json.dumps(self.points[-1].as_dict()) + "\n")

    def should_stop(self) -> bool:
        return self._stop.exists()


def child_main(spec_path: Path, rank: int) -> int:
    import torch

    from ml.distributed.placement import Slot as _Slot
    from ml.distributed.run import run_role
    from ml.distributed.transport import Rendezvous

    torch.set_num_threads(1)
    spec = json.loads(spec_path.read_text())
    directory = spec_path.parent
    placement = [_Slot.from_dict(d) for d in spec["placement"]]
    rendezvous = Rendezvous(**spec["rendezvous"])
    reporter = _FileReporter(directory) if rank == 0 else MemoryReporter()
    shape = LinkShape.of_profile(placement[rank].profile) if spec["shape"] else None

    if rank != 0:  # the port rank 0 opened, as the control plane would hand it out
        port_file = directory / "port"
        deadline = time.monotonic() + rendezvous.timeout_s + 60
        while not port_file.exists():
            if time.monotonic() > deadline or (directory / "rank-0.json").exists():
                raise SystemExit(f"rank {rank}: rank 0 never opened its store")
            time.sleep(0.02)
        rendezvous = Rendezvous(**{**spec["rendezvous"], "port": int(port_file.read_text())})

    def store_ready(port: int) -> None:
        tmp = directory / "port.tmp"
        tmp.write_text(str(port))
        tmp.rename(directory / "port")

    outcome: dict
    try:
        result = run_role(spec["method"], spec["config"], placement, rank, rendezvous,
                          reporter, on_store_ready=store_ready, shape=shape)
        outcome = {"ok": True, "result": result}
    except PeerLost as exc:
        outcome = {"ok": False, "error_type": "PeerLost", "error": str(exc),
                   "lost": exc.as_dict()}
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as JSON
        outcome = {"ok": False, "error_type": type(exc).__name__, "error": str(exc)}
    tmp = directory / f"rank-{rank}.json.tmp"
    tmp.write_text(json.dumps(outcome))
    tmp.rename(directory / f"rank-{rank}.json")
    sys.stdout.flush()
    os._exit(0 if outcome["ok"] else 1)  # never hang in a process group's teardown

