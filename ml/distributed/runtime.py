"""One program per method, two runtimes: how a coordinator calls its workers.

A method is a :class:`RoleProgram`: ``setup`` builds what every rank shares (data, model,
testbed), ``worker`` builds the object of one virtual worker (e.g. ``ml.fl.Worker``), and
``coordinate`` drives the run. The coordinator reaches worker ``w`` through
``runtime.workers[w]``:

- ``call(method, *args, kind=..., reply_kind=...)`` returns a future whose ``result()`` is the
  worker's return value; ``cast(...)`` is the same without a reply (e.g. gradients down).
- Calls to one worker run in the order they were made; calls to workers on different ranks run
  concurrently.

The :class:`EmulatedRuntime` runs a call in-process when its result is needed (or when a later
call to the same worker needs it done), so memory stays that of one call at a time and the
program charges the emulated testbed exactly as before; a program whose workers are independent
may ask for client threads (``RoleProgram.threads``), which run the calls in the same order on
several cores with the same results. The :class:`DistributedRuntime` sends
the call to the rank hosting the worker (ml.distributed.serve runs it there) and keeps at most
:data:`WINDOW` calls in flight per rank, so a rank hosting many virtual workers is kept busy
without the coordinator holding one model copy per worker.
``kind``/``reply_kind`` label the payload bytes (``model``, ``features``, ``gradients``) for the
measured ``traffic_bytes/<kind>``.
"""
from __future__ import annotations

import collections
import concurrent.futures
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ml.distributed import messages
from ml.distributed.errors import PeerLost, ProtocolError, RemoteError
from ml.distributed.placement import Slot
from ml.distributed.transport import Transport

#: Calls in flight per worker rank.
WINDOW = 4
#: How long a failing coordinator waits for the workers to hear it.
ABORT_GRACE_S = 10.0


@dataclass(frozen=True)
class RoleProgram:
    """A method written once for both runtimes (see the module's docstring)."""

    setup: Callable[[Any, Any], Any]  # (config, torch device) -> context, on every rank
    worker: Callable[[Any, int], object]  # (context, index) -> virtual worker object
    coordinate: Callable[[Any, Any, "Runtime", Any], dict]  # (config, context, runtime, reporter)
    exposed: frozenset[str]  # worker methods the coordinator may call
    workers: Callable[[Any], int] = lambda config: config.workers
    # (context, ml.distributed.links.WorkerLinks) -> None: called after setup on every
    # process hosting workers, before they are built, for programs whose workers talk to each
    # other (mailbox, collectives); None: they talk to the coordinator only.
    connect: Callable[[Any, Any], None] | None = None
    # The kind of device ("edge" or "cloud") that hosts the workers on a testbed.
    worker_kind: str = "edge"
    # (config) -> threads the emulated runtime runs the workers' calls on; > 1 only for
    # programs whose workers share nothing but read-only data (see _ClientThreads).
    threads: Callable[[Any], int] = lambda config: 1


class Future:
    """The result of a call, available through :meth:`result`."""

    def result(self) -> Any:
        raise NotImplementedError


def results(futures: list[Future]) -> Iterator[Any]:
    """The results of ``futures`` in order, each future dropped from the list (which ends
    empty) before its result is handed out.

    A future keeps its value; a list of answered futures would hold every worker's reply (one
    model per client in FedAvg) until the round ends. Consumed this way, a coordinator holds
    one reply at a time.
    """
    futures.reverse()
    while futures:
        yield futures.pop().result()


# -- emulated ------------------------------------------------------------------------------------

class _LocalCall(Future):
    def __init__(self, worker: "LocalWorker", fn: Callable[[], Any], reply: bool = True):
        self._worker = worker
        self._fn: Callable[[], Any] | None = fn
        self.reply = reply
        self._done = False
        self._value: Any = None
        self.task: concurrent.futures.Future | None = None  # where it runs on a thread

    def run(self) -> None:
        if not self._done:
            self._value = self._fn()
            self._done = True
            self._fn = None

    def take(self) -> Callable[[], Any]:
        """The call's function, handed to a thread (once)."""
        fn, self._fn = self._fn, None
        return fn

    def result(self) -> Any:
        if not self._done:
            threads = self._worker.threads
            if threads is None:
                self._worker.drain(until=self)
            else:
                self._value = threads.wait(self)
                self._done = True
        return self._value


class _ClientThreads:
    """Runs an emulated runtime's calls on ``count`` threads, in the order they were made; a
    worker's calls still run one after the other. For programs whose workers share nothing
    but read-only data (FedAvg's clients), so the results are those of running them in turn.

    At most ``2 * count`` replies are computed ahead of the coordinator asking for them: each
    may be a model, and 10,000 of them must not pile up.
    """

    def __init__(self, count: int):
        self.executor = concurrent.futures.ThreadPoolExecutor(
            count, thread_name_prefix="estuary-client")
        self.ahead = 2 * count
        self.pending: collections.deque[_LocalCall] = collections.deque()
        self.outstanding: set[_LocalCall] = set()  # submitted replies not yet asked for
        self.last: dict[int, concurrent.futures.Future] = {}  # each worker's latest task

    def add(self, call: _LocalCall) -> None:
        self.pending.append(call)
        self._top_up()

    def _submit_next(self) -> None:
        call = self.pending.popleft()
        worker = call._worker.index
        before, fn = self.last.get(worker), call.take()

        def task() -> Any:
            if before is not None:
                concurrent.futures.wait([before])
            return fn()

        call.task = self.last[worker] = self.executor.submit(task)
        if call.reply:
            self.outstanding.add(call)

    def _top_up(self) -> None:
        while self.pending and len(self.outstanding) < self.ahead:
            self._submit_next()

    def wait(self, call: _LocalCall) -> Any:
        """``call``'s value (its exception raised here), once every call before it started."""
        while call.task is None:
            self._submit_next()
        task = call.task
        try:
            return task.result()
        finally:
            # Nothing here may keep the reply once it is handed out (a task holds its value).
            call.task = None
            self.outstanding.discard(call)
            worker = call._worker.index
            if self.last.get(worker) is task:
                del self.last[worker]
            self._top_up()

    def flush(self) -> None:
        while self.pending:
            self._submit_next()
        concurrent.futures.wait(list(self.last.values()))
        self.last.clear()

    def close(self) -> None:
        self.pending.clear()
        self.executor.shutdown(wait=True, cancel_futures=True)


class LocalWorker:
    """A worker object in this process, its calls run lazily and in order (on the runtime's
    client threads, when it has them)."""

    def __init__(self, index: int, obj: object, threads: _ClientThreads | None = None):
        self.index = index
        self.obj = obj
        self.threads = threads
        self._queue: collections.deque[_LocalCall] = collections.deque()

    def call(self, method: str, *args: Any, kind: str | None = None,
             reply_kind: str | None = None, reply: bool = True) -> Future:
        fn = getattr(self.obj, method)
        future = _LocalCall(self, lambda: fn(*args), reply)
        if self.threads is not None:
            self.threads.add(future)
        else:
            self._queue.append(future)
        return future

    def cast(self, method: str, *args: Any, kind: str | None = None) -> None:
        self.call(method, *args, kind=kind, reply=False)

    def drain(self, until: _LocalCall | None = None) -> None:
        while self._queue:
            future = self._queue.popleft()
            future.run()
            if future is until:
                return


class Runtime:
    """What a coordinator sees of its workers; see EmulatedRuntime and DistributedRuntime."""

    execution = "emulated"
    workers: list

    def flush(self) -> None:
        """Finish every call made so far."""

    def report_round(self, log, step: int, sim_round_s: float, train_loss: float,
                     evaluation: tuple[float, float] | None, waiting) -> None:
        raise NotImplementedError

    def summary(self) -> dict:
        """Keys the run's result gains in this runtime."""
        return {}

    def measure(self) -> dict[int, dict]:
        """Every rank's cumulative counters (``Counters.as_dict``), after the calls made so
        far; empty in the emulated runtime, which measures nothing."""
        return {}


class EmulatedRuntime(Runtime):
    """Every worker in this process; times and traffic come from the emulated testbed."""

    execution = "emulated"

    def __init__(self, objects: list[object], threads: int = 1):
        """``threads`` > 1 runs the calls on that many threads (see :class:`_ClientThreads`:
        only for programs whose workers are independent); :meth:`close` stops them."""
        self._threads = _ClientThreads(threads) if threads > 1 else None
        self.workers = [LocalWorker(i, obj, self._threads) for i, obj in enumerate(objects)]

    def flush(self) -> None:
        if self._threads is not None:
            self._threads.flush()
        for worker in self.workers:
            worker.drain()

    def close(self) -> None:
        """Stop the client threads (waiting for a call that is running)."""
        if self._threads is not None:
            self._threads.close()

    def report_round(self, log, step, sim_round_s, train_loss, evaluation, waiting) -> None:
        self.flush()
        log.round(step, sim_round_s, train_loss, evaluation)
        waiting.report(log, step)


# -- distributed ---------------------------------------------------------------------------------

class _RemoteCall(Future):
    def __init__(self, runtime: "DistributedRuntime", rank: int):
        self._runtime = runtime
        self.rank = rank
        self.seq = -1
        self.done = False
        self.value: Any = None

    def result(self) -> Any:
        while not self.done:
            self._runtime.advance(self.rank)
        return self.value


class RemoteWorker:
    """A proxy for a worker hosted by another rank."""

    def __init__(self, runtime: "DistributedRuntime", index: int, rank: int):
        self.index = index
        self.rank = rank
        self._runtime = runtime

    def call(self, method: str, *args: Any, kind: str | None = None,
             reply_kind: str | None = None) -> Future:
        future = _RemoteCall(self._runtime, self.rank)
        self._runtime.enqueue(self.rank, {"op": "call", "worker": self.index, "method": method,
                                          "reply_kind": reply_kind}, list(args), kind, future)
        return future

    def cast(self, method: str, *args: Any, kind: str | None = None) -> None:
        self._runtime.enqueue(self.rank, {"op": "cast", "worker": self.index,
                                          "method": method}, list(args), kind, None)


_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def metric_safe(name: str) -> str:
    """A device name usable inside a metric name (ml.wire's rules)."""
    return _NAME_SAFE.sub("-", name)[:60] or "device"


class DistributedRuntime(Runtime):
    """The coordinator's view of a distributed run: proxies, measured times and traffic."""

    execution = "distributed"

    def __init__(self, transport: Transport, placement: list[Slot], num_workers: int):
        self.transport = transport
        self.placement = sorted(placement, key=lambda s: s.rank)
        host = {w: s.rank for s in self.placement for w in s.workers}
        if sorted(host) != list(range(num_workers)):
            raise ValueError(f"the placement hosts workers {sorted(host)}, the run has "
                             f"{num_workers}")
        self.workers = [RemoteWorker(self, w, host[w]) for w in range(num_workers)]
        self.worker_ranks = [s.rank for s in self.placement if s.rank != 0]
        self._queued: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self._inflight: dict[int, collections.deque[_RemoteCall]] = \
            collections.defaultdict(collections.deque)
        self._seq = 0
        self._mark = time.perf_counter()
        self._last: dict[int, dict] = {}
        self._stats: dict[int, dict] = {}

    # -- calls -------------------------------------------------------------------------------

    def enqueue(self, rank: int, header: dict, args: list, kind: str | None,
                future: _RemoteCall | None) -> None:
        self._queued[rank].append((header, args, kind, future))
        self._pump(rank)

    def _pump(self, rank: int) -> None:
        queued, inflight = self._queued[rank], self._inflight[rank]
        while queued and (queued[0][3] is None or len(inflight) < WINDOW):
            header, args, kind, future = queued.popleft()
            tensors: list = []
            packed = messages.pack(args, tensors)
            if future is not None:
                future.seq = self._seq
                self._seq += 1
                inflight.append(future)
            self.transport.send(rank, {**header, "seq": future.seq if future else None,
                                       "args": packed}, tensors, kind)

    def advance(self, rank: int) -> None:
        """Receive the next reply from ``rank`` and resolve its future."""
        self._pump(rank)
        inflight = self._inflight[rank]
        if not inflight:
            raise RuntimeError(f"waiting for rank {rank} with no call in flight")
        message = self._receive(rank)
        future = inflight.popleft()
        header = message.header
        if header.get("op") != "reply" or header.get("seq") != future.seq:
            raise ProtocolError(f"rank {rank} answered {header.get('op')!r} "
                                f"#{header.get('seq')}, expected reply #{future.seq}")
        future.value = messages.unpack(header.get("value"), message.tensors)
        future.done = True
        self._pump(rank)

    def _receive(self, rank: int):
        """The next message from ``rank``; a ``bye`` (it stopped because a peer was lost)
        raises that PeerLost here too."""
        message = self.transport.recv(rank)
        if message.header.get("op") == "bye":
            if isinstance(message.header.get("lost"), dict):
                raise PeerLost.from_dict(message.header["lost"])
            peer = self.placement[rank]
            raise RemoteError(f"rank {rank} (device {peer.name}) stopped")
        return message

    def flush(self) -> None:
        for rank in self.worker_ranks:
            while self._queued[rank] or self._inflight[rank]:
                if self._inflight[rank]:
                    self.advance(rank)
                else:
                    self._pump(rank)

    def measure(self) -> dict[int, dict]:
        stats = self._control("stats")
        stats[0] = {**self.transport.counters.as_dict(), "compute_s": 0.0}
        self._stats = stats
        return stats

    def _control(self, op: str) -> dict[int, dict]:
        """Send ``op`` to every worker rank and collect their answers (after pending calls)."""
        self.flush()
        for rank in self.worker_ranks:
            self.transport.send(rank, {"op": op})
        answers = {}
        for rank in self.worker_ranks:
            message = self._receive(rank)
            if message.header.get("op") != op:
                raise ProtocolError(f"rank {rank} answered {message.header.get('op')!r} to "
                                    f"{op!r}")
            answers[rank] = message.header.get("stats", {})
        return answers

    # -- metrics -----------------------------------------------------------------------------

    def reset_clock(self) -> None:
        """Start the first round's wall time now (after the coordinator's set-up)."""
        self._mark = time.perf_counter()

    def report_round(self, log, step, sim_round_s, train_loss, evaluation, waiting) -> None:
        stats = self._control("stats")
        now = time.perf_counter()
        wall = now - self._mark
        self._mark = now
        own = self.transport.counters.as_dict()
        own["compute_s"] = 0.0
        stats[0] = own
        log.metric("round_time_s", step, wall)
        log.metric("sim_round_time_s", step, sim_round_s)
        log.metric("sim_time_s", step, log.testbed.now())
        payload = sum(s["payload_sent"] for s in stats.values())
        log.metric("traffic_bytes", step, payload)
        kinds: dict[str, int] = collections.defaultdict(int)
        for s in stats.values():
            for kind, nbytes in s["payload_by_kind"].items():
                kinds[kind] += nbytes
        for kind in sorted(kinds):
            if kind != "control":
                log.metric(f"traffic_bytes/{kind}", step, kinds[kind])
        log.metric("framing_bytes", step, sum(s["framing_sent"] for s in stats.values()))
        for slot in self.placement:
            s, last = stats[slot.rank], self._last.get(slot.rank)
            name = metric_safe(slot.name)
            log.metric(f"traffic_bytes/{name}", step, s["payload_sent"] + s["payload_received"])
            comm = s["comm_s"] - (last["comm_s"] if last else 0.0)
            wait = s["wait_s"] - (last["wait_s"] if last else 0.0)
            compute = (s["compute_s"] - (last["compute_s"] if last else 0.0)
                       if slot.rank else max(wall - comm - wait, 0.0))
            log.metric(f"compute_time_s/{name}", step, compute)
            log.metric(f"comm_time_s/{name}", step, comm)
            log.metric(f"waiting_time_s/{name}", step, wait)
        self._last = stats
        self._stats = stats
        log.metric("train_loss", step, train_loss)
        if evaluation is not None:
            accuracy, loss = evaluation
            log.metric("accuracy", step, accuracy)
            log.metric("loss", step, loss)

    def gather_stats(self) -> dict[int, dict]:
        """Every rank's counters now, after the calls made so far (rank 0's included); the
        run's summary reports them. For methods that report once, not per round."""
        stats = self._control("stats")
        stats[0] = self.transport.counters.as_dict()
        self._stats = stats
        return stats

    def finish(self) -> dict[int, dict]:
        """End the run on every worker rank; their final counters."""
        return self._control("end")

    def abort(self, header: dict, lost: int | None = None) -> None:
        """Tell every worker rank to stop (best effort: some may be gone), and give them a
        few seconds to say they heard it before this rank (and its store) goes away."""
        told = set()
        for rank in self.worker_ranks:
            if rank == lost:
                continue
            try:
                self.transport.send(rank, header)
                told.add(rank)
            except Exception:  # noqa: BLE001 - the run is failing already
                pass
        try:
            self.transport.flush()
        except Exception:  # noqa: BLE001
            pass
        self.transport.collect("bye", told, min(self.transport.timeout_s, ABORT_GRACE_S))

    def summary(self) -> dict:
        stats = self._stats or {0: self.transport.counters.as_dict()}
        return {
            "execution": "distributed",
            "traffic_bytes": sum(s["payload_sent"] for s in stats.values()),
            "framing_bytes": sum(s["framing_sent"] for s in stats.values()),
            "messages": sum(s["messages_sent"] for s in stats.values()),
            "placement": [s.as_dict() for s in self.placement],
        }

