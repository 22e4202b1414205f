"""One rank's end of a distributed run over torch.distributed: rendezvous, messages, liveness.

- **Rendezvous.** Rank 0 opens a ``TCPStore`` (the coordinator's agent hosts it) on the given
  or a free port; every rank wraps it in a ``PrefixStore`` under the run's secret prefix and
  joins a gloo process group (``cpu:gloo,cuda:nccl`` when the run uses CUDA). Every call has an
  explicit timeout (c10d's default is 30 minutes).
- **Messages** (:mod:`ml.distributed.messages`): the payload tensors go point to point through
  the process group (``isend``/``irecv``); the JSON header is then pushed onto the receiver's
  inbox queue in the store. A receiver blocks on its inbox, never on a gloo ``recv``: a gloo
  receive cannot be polled (its ``is_completed()`` stays false) and a timed-out ``wait`` closes
  the pair, so a payload is only received once its header says it was sent.
- **Liveness.** Every rank bumps a heartbeat counter in the store; a watchdog thread reads the
  others' and, when one has not moved for ``timeout_s`` (or the cancel check fires on rank 0),
  pushes a note onto its own inbox, which wakes the receiver with :class:`PeerLost` (or
  ``Cancelled``). A lost store (rank 0 gone) is a :class:`PeerLost` of rank 0.
- **Shaping** (optional): the rank's :class:`LinkShape` delays what it sends (ml.distributed.shaping).
- **Counters**: payload and framing bytes sent and received, per peer and per kind, and the
  seconds spent waiting for messages and communicating.
"""
from __future__ import annotations

import collections
import datetime
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist

from ml.distributed import messages
from ml.distributed.errors import PeerLost, ProtocolError, RemoteError
from ml.distributed.shaping import LinkShape, Shaper
from ml.reporting import Cancelled

_KEYS = "estuary/"
# How long the coordinator waits for a failed rank's own reason before blaming it (see _blame).
_EXPLAIN_GRACE_S = 2.0


@dataclass(frozen=True)
class Rendezvous:
    """Where and how the ranks of one run meet."""

    host: str  # the coordinator agent's advertised address
    port: int  # TCPStore port; 0 on the coordinator = open one on a free port
    prefix: str  # per-run secret: every store key lives under it (PrefixStore)
    timeout_s: float  # init_process_group, the store and every wait use it

    def __post_init__(self) -> None:
        if not self.prefix:
            raise ValueError("the rendezvous needs a non-empty secret prefix")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class Peer:
    rank: int
    device: str
    name: str


@dataclass
class Message:
    src: int
    header: dict
    tensors: list[torch.Tensor]


@dataclass
class Counters:
    """What one rank sent, received and spent (cumulative)."""

    payload_sent: int = 0
    payload_received: int = 0
    framing_sent: int = 0
    framing_received: int = 0
    payload_by_kind: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    messages_sent: int = 0
    comm_s: float = 0.0
    wait_s: float = 0.0
    compute_s: float = 0.0  # filled by the role (serve loop) where it is measured

    def as_dict(self) -> dict:
        return {"payload_sent": self.payload_sent, "payload_received": self.payload_received,
                "framing_sent": self.framing_sent, "framing_received": self.framing_received,
                "payload_by_kind": dict(self.payload_by_kind),
                "messages_sent": self.messages_sent, "comm_s": self.comm_s,
                "wait_s": self.wait_s, "compute_s": self.compute_s}


def _td(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds)


def _is_timeout(exc: Exception) -> bool:
    return isinstance(exc, dist.DistStoreError) and "timeout" in str(exc).lower()


def _gloo_interface_towards(host: str, port: int) -> str | None:
    """The name of the local interface that routes to ``host`` (for GLOO_SOCKET_IFNAME), so
    gloo listens where the peers can reach it, not on a hostname that resolves to loopback."""
    try:
        import psutil
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port or 1))
            local = s.getsockname()[0]
        for name, addrs in psutil.net_if_addrs().items():
            if any(a.address == local for a in addrs):
                return name
    except (OSError, ImportError):
        return None
    return None


class Transport:
    """Messages between the ranks of one run (see the module's docstring)."""

    def __init__(self, peers: list[Peer], rank: int, rendezvous: Rendezvous, *,
                 shape: LinkShape | None = None,
                 on_store_ready: Callable[[int], None] | None = None,
                 use_cuda: bool = False,
                 stop_check: Callable[[], bool] | None = None):
        self.peers = {p.rank: p for p in peers}
        self.rank = rank
        self.world_size = len(peers)
        self.timeout_s = rendezvous.timeout_s
        self.counters = Counters()
        self.wire_device = torch.device("cuda") if use_cuda else torch.device("cpu")
        self._lock = threading.Lock()
        self._pending: dict[int, collections.deque[Message]] = collections.defaultdict(
            collections.deque)
        self._backlog: collections.deque[bytes] = collections.deque()  # read ahead by _blame
        # Payload buffers of sends not yet acknowledged, per destination: (index, works, buffers).
        # gloo send works cannot be polled; a peer's header says how many of our messages it
        # has received (``ack``), and only then are they released.
        self._sends: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self._sent_count: dict[int, int] = collections.defaultdict(int)
        self._recv_count: dict[int, int] = collections.defaultdict(int)
        self._closed = threading.Event()
        self._failure: BaseException | None = None
        self._stop_check = stop_check
        timeout = _td(rendezvous.timeout_s)

        def connect(host: str, port: int, master: bool = False) -> dist.Store:
            store = dist.TCPStore(host, port, self.world_size if master else None,
                                  is_master=master, timeout=timeout, wait_for_workers=False)
            return dist.PrefixStore(rendezvous.prefix, store)

        try:
            if rank == 0:
                self._master = dist.TCPStore("0.0.0.0", rendezvous.port, self.world_size,
                                             is_master=True, timeout=timeout,
                                             wait_for_workers=False)
                self.port = self._master.port
                host = "127.0.0.1"
                if on_store_ready is not None:
                    on_store_ready(self.port)
            else:
                host, self.port = rendezvous.host, rendezvous.port
            self.store = connect(host, self.port)
            self._inbox_store = connect(host, self.port)
            self._watch_store = connect(host, self.port)
        except (dist.DistError, RuntimeError, OSError) as exc:
            raise self._lost(0, f"cannot reach the store at {rendezvous.host}:"
                                f"{rendezvous.port}: {exc}") from None
        self.store.add(f"{_KEYS}hb/{rank}", 1)
        if "GLOO_SOCKET_IFNAME" not in os.environ and rank != 0:
            interface = _gloo_interface_towards(rendezvous.host, self.port)
            if interface:
                os.environ["GLOO_SOCKET_IFNAME"] = interface
        backend = "cpu:gloo,cuda:nccl" if use_cuda else "gloo"
        try:
            dist.init_process_group(backend, store=self.store, rank=rank,
                                    world_size=self.world_size, timeout=timeout)
        except (dist.DistError, RuntimeError) as exc:
            missing = [r for r in self.peers if r != rank and not self._has_key(f"hb/{r}")]
            if missing:
                raise self._lost(missing[0], f"did not join the run within "
                                             f"{rendezvous.timeout_s:g} s") from None
            raise self._lost(0 if rank else 1, f"joining the process group failed: {exc}") \
                from None
        self._shaper = Shaper(shape) if shape is not None else None
        self._outbox: queue.Queue | None = None
        if self._shaper is not None:
            self._outbox = queue.Queue()
            self._out_store = connect(host, self.port)
            threading.Thread(target=self._deliver, daemon=True, name="shaped-outbox").start()
        threading.Thread(target=self._watch, daemon=True, name="heartbeat").start()

    # -- errors ------------------------------------------------------------------------------

    def _lost(self, rank: int, detail: str) -> PeerLost:
        peer = self.peers.get(rank, Peer(rank, "?", f"rank-{rank}"))
        return PeerLost(rank, peer.device, peer.name, detail)

    def _blame(self, rank: int, detail: str) -> BaseException:
        """The failure to raise when talking to ``rank`` failed. On the coordinator, ``rank``
        may have left because it lost another peer: a rank says so (``bye`` with the lost peer,
        or ``error``) before it exits, so its inbox is read ahead briefly for that reason and
        the run's failure names the device really lost, not the messenger."""
        if self.rank != 0 or rank == 0:
            return self._lost(rank, detail)
        # Its reason may already be off the inbox, set aside while waiting for another rank.
        for message in self._pending[rank]:
            if (reason := self._reason(rank, message.header)) is not None:
                return reason
        deadline = time.monotonic() + min(_EXPLAIN_GRACE_S, self.timeout_s)
        read: list[bytes] = []
        try:
            while (body := self._pop_body(deadline)) is not None:
                read.append(body)
                header = messages.decode_header(torch.frombuffer(bytearray(body),
                                                                 dtype=torch.uint8))
                if header.get("src") == rank and header.get("op") in ("bye", "error"):
                    reason = self._reason(rank, header)
                    if reason is not None:
                        return reason
                    break  # it left without naming a peer: it is the one lost
        except Exception:  # noqa: BLE001 - no explanation: blame the rank we lost
            pass
        finally:
            self._backlog.extend(read)
        return self._lost(rank, detail)

    def _reason(self, rank: int, header: dict) -> BaseException | None:
        """What ``rank`` said when it left (``bye`` with the peer it lost, or ``error``)."""
        if header.get("op") == "bye" and isinstance(header.get("lost"), dict):
            return PeerLost.from_dict(header["lost"])
        if header.get("op") == "error":
            return RemoteError(f"rank {rank} (device {self.peers[rank].name}) failed: "
                               f"{header.get('error')}")
        return None

    def _has_key(self, key: str) -> bool:
        try:
            return self.store.check([f"{_KEYS}{key}"])
        except (dist.DistError, RuntimeError):
            return False

    # -- sending -----------------------------------------------------------------------------

    def send(self, dst: int, header: dict, tensors: list[torch.Tensor] = (),
             kind: str | None = None) -> None:
        """Send ``header`` (JSON) and ``tensors`` to rank ``dst``; returns once handed over
        (after the shaped uplink time, when shaped)."""
        self._raise_failure()
        start = time.perf_counter()
        tensors = list(tensors)
        payload = messages.flatten(tensors, self.wire_device) if tensors else []
        head = messages.encode_header({**header, "src": self.rank,
                                       "ack": self._recv_count[dst],
                                       "tensors": messages.tensor_specs(tensors)})
        body = bytes(head.numpy())
        nbytes = messages.payload_bytes(payload)
        with self._lock:
            c = self.counters
            c.payload_sent += nbytes
            c.framing_sent += len(body)
            c.messages_sent += 1
            c.payload_by_kind[kind or "control"] += nbytes
        if self._shaper is None:
            try:
                self._hand_over(dst, payload, body, self.store)
            except PeerLost as exc:
                raise self._blame(exc.rank, exc.detail) from None
        else:
            busy_until, release_at = self._shaper.schedule(nbytes + len(body))
            delay = busy_until - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._outbox.put((release_at, dst, payload, body))
        with self._lock:
            self.counters.comm_s += time.perf_counter() - start

    def _hand_over(self, dst: int, payload: list[torch.Tensor], body: bytes,
                   store: dist.Store) -> None:
        try:
            works = [dist.isend(t, dst=dst) for t in payload]
        except (dist.DistError, RuntimeError) as exc:
            raise self._lost(dst, f"sending failed: {exc}") from None
        with self._lock:
            index = self._sent_count[dst]
            self._sent_count[dst] += 1
            if works:
                self._sends[dst].append((index, works, payload))
        try:
            store.queue_push(f"{_KEYS}inbox/{dst}", body)
        except (dist.DistError, RuntimeError) as exc:
            raise self._lost(0, f"the run's store stopped answering: {exc}") from None

    def _release(self, dst: int, acknowledged: int) -> None:
        """Free the buffers of the first ``acknowledged`` messages to ``dst`` (received)."""
        with self._lock:
            sends = self._sends[dst]
            while sends and sends[0][0] < acknowledged:
                _, works, _ = sends.popleft()
                for w in works:
                    w.wait(_td(self.timeout_s))

    def _deliver(self) -> None:
        while not self._closed.is_set():
            try:
                item = self._outbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                return
            release_at, dst, payload, body = item
            delay = release_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                self._hand_over(dst, payload, body, self._out_store)
            except Exception as exc:  # noqa: BLE001 - re-raised on the main thread
                self._failure = self._lost(dst, f"sending failed: {exc}")
                self._note({"op": "_lost", "rank": dst, "detail": f"sending failed: {exc}"})
                return
            finally:
                self._outbox.task_done()

    def flush(self) -> None:
        """Wait until every shaped message has been handed over."""
        if self._outbox is not None:
            self._outbox.join()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure = self._failure
            if isinstance(failure, PeerLost):
                failure = self._blame(failure.rank, failure.detail)
            raise failure

    # -- receiving ---------------------------------------------------------------------------

    def recv(self, src: int | None = None) -> Message:
        """The next message from ``src`` (any rank when None), in the order it was sent.

        Raises PeerLost when a peer stops answering, Cancelled when the stop check fires or
        the coordinator cancels (``stop``), RemoteError / PeerLost when a peer reports its
        failure (``error``, ``abort``).
        """
        while True:
            if src is None:
                ready = next((q for q in self._pending.values() if q), None)
                if ready is not None:
                    return ready.popleft()
            elif self._pending[src]:
                return self._pending[src].popleft()
            message = self._next()
            self._pending[message.src].append(message)

    def collect(self, op: str, ranks: set[int], grace_s: float) -> set[int]:
        """Wait up to ``grace_s`` for a message ``op`` from each of ``ranks`` (other messages
        and failures are dropped); the ranks that sent it. Used on the way out of a failed or
        cancelled run, so the store outlives the news of it."""
        waiting, seen = set(ranks), set()
        deadline = time.monotonic() + grace_s
        while waiting and time.monotonic() < deadline:
            try:
                message = self._next(deadline)
            except Exception as exc:  # noqa: BLE001 - the run is ending already
                if isinstance(exc, PeerLost):
                    waiting.discard(exc.rank)
                continue
            if message is None:
                break
            if message.header.get("op") == op:
                waiting.discard(message.src)
                seen.add(message.src)
        return seen

    def _pop_body(self, deadline: float | None = None) -> bytes | None:
        """The next raw message on this rank's inbox (read-ahead first); None at ``deadline``."""
        if self._backlog:
            return self._backlog.popleft()
        key = f"{_KEYS}inbox/{self.rank}"
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._inbox_store.set_timeout(_td(min(left, self.timeout_s)))
            try:
                return self._inbox_store.queue_pop(key)
            except (dist.DistError, RuntimeError) as exc:
                if _is_timeout(exc):
                    continue  # the watchdog wakes us when a peer is really lost
                self._closed.set()
                raise self._lost(0, f"the run's store stopped answering: {exc}") from None

    def _next(self, deadline: float | None = None) -> Message | None:
        start = time.perf_counter()
        body = self._pop_body(deadline)
        if body is None:
            return None
        received = time.perf_counter()
        header = messages.decode_header(torch.frombuffer(bytearray(body), dtype=torch.uint8))
        op = header["op"]
        if op == "_lost":
            raise self._blame(int(header["rank"]), str(header["detail"]))
        if op == "_cancel":
            raise Cancelled()
        src = header.get("src")
        if isinstance(src, bool) or not isinstance(src, int) or src not in self.peers:
            raise ProtocolError(f"message from unknown rank {src!r}")
        if op == "stop":  # the coordinator cancelled: wakes a rank waiting on a peer too
            raise Cancelled()
        if op == "abort":
            if "lost" in header:
                raise PeerLost.from_dict(header["lost"])
            raise RemoteError(str(header.get("error", "the coordinator failed")))
        if op == "error":
            peer = self.peers[src]
            raise RemoteError(f"rank {src} (device {peer.name}) failed: {header.get('error')}")
        ack = header.get("ack", 0)
        if isinstance(ack, int) and not isinstance(ack, bool):
            self._release(src, ack)
        tensors: list[torch.Tensor] = []
        specs = header.get("tensors", [])
        if not isinstance(specs, list):
            raise ProtocolError("'tensors' must be a list")
        if specs:
            buffers, plan = messages.buffers_for(specs, self.wire_device)
            try:  # posting fails at once when the pair is already closed
                works = [dist.irecv(b, src=src) for b in buffers]
                for w in works:
                    w.wait(_td(self.timeout_s))
            except (dist.DistError, RuntimeError) as exc:
                raise self._blame(src, f"its payload did not arrive: {exc}") from None
            tensors = messages.split(plan)
            nbytes = messages.payload_bytes(buffers)
        else:
            nbytes = 0
        with self._lock:
            self._recv_count[src] += 1
            c = self.counters
            c.payload_received += nbytes
            c.framing_received += len(body)
            c.wait_s += received - start
            c.comm_s += time.perf_counter() - received
        return Message(src, header, tensors)

    # -- liveness ----------------------------------------------------------------------------

    def _note(self, header: dict) -> None:
        """Wake this rank's receiver with a note (lost peer, cancel)."""
        body = messages.encode_header({**header, "src": self.rank})
        self._watch_store.queue_push(f"{_KEYS}inbox/{self.rank}", bytes(body.numpy()))

    def _watch(self) -> None:
        interval = min(max(self.timeout_s / 10, 0.05), 2.0)
        others = [r for r in self.peers if r != self.rank]
        keys = [f"{_KEYS}hb/{r}" for r in others]
        seen = {r: (None, time.monotonic()) for r in others}
        noted: set[int] = set()
        while not self._closed.wait(interval):
            try:
                self._watch_store.add(f"{_KEYS}hb/{self.rank}", 1)
                values = self._watch_store.multi_get(keys) if keys else []
            except (dist.DistError, RuntimeError) as exc:
                if self.rank != 0 and not self._closed.is_set():
                    self._failure = self._lost(0, f"the run's store stopped answering: {exc}")
                return
            now = time.monotonic()
            for r, value in zip(others, values):
                last, since = seen[r]
                if value != last:
                    seen[r] = (value, now)
                elif now - since > self.timeout_s and r not in noted:
                    noted.add(r)
                    self._note({"op": "_lost", "rank": r,
                                "detail": f"no heartbeat for {self.timeout_s:g} s"})
            if self._stop_check is not None:
                try:
                    stop = self._stop_check()
                except Exception:  # noqa: BLE001 - a broken check must not kill liveness
                    stop = False
                if stop:
                    self._note({"op": "_cancel"})
                    self._stop_check = None

    # -- end ---------------------------------------------------------------------------------

    def close(self, *, graceful: bool = True) -> None:
        """Stop the threads; on a graceful end wait for the last sends and leave the group."""
        try:
            if graceful:
                self.flush()
                with self._lock:
                    for sends in self._sends.values():
                        for _, works, _ in sends:
                            for w in works:
                                w.wait(_td(self.timeout_s))
                    self._sends.clear()
        finally:
            self._closed.set()
            if self._outbox is not None:
                self._outbox.put(None)
            if graceful and dist.is_initialized():
                dist.destroy_process_group()
