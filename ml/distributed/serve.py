"""A worker rank's serve loop: run the coordinator's calls on the real worker objects."""
from __future__ import annotations

import time

from ml.distributed import messages
from ml.distributed.errors import PeerLost, ProtocolError, RemoteError
from ml.distributed.transport import Transport
from ml.reporting import Cancelled


def serve(transport: Transport, objects: dict[int, object], exposed: frozenset[str]) -> dict:
    """Answer rank 0 until it ends the run; return this rank's counters.

    Ops: ``call`` (run, reply with the result), ``cast`` (run, no reply), ``stats`` (reply
    with the counters), ``end`` (reply, return); ``stop`` (Cancelled) and ``abort`` (PeerLost or
    RemoteError) are raised by the transport, even while a worker waits on a peer. Only
    methods in ``exposed`` run.
    """
    counters = transport.counters
    while True:
        message = transport.recv(0)
        header = message.header
        op = header["op"]
        if op in ("call", "cast"):
            worker, method = header.get("worker"), header.get("method")
            if worker not in objects:
                raise ProtocolError(f"this rank does not host worker {worker!r}")
            if method not in exposed:
                raise ProtocolError(f"method {method!r} may not be called remotely")
            args = messages.unpack(header.get("args", []), message.tensors)
            if not isinstance(args, list):
                raise ProtocolError("call arguments must be a list")
            start = time.perf_counter()
            value = getattr(objects[worker], method)(*args)
            counters.compute_s += time.perf_counter() - start
            if op == "call":
                tensors: list = []
                packed = messages.pack(value, tensors)
                transport.send(0, {"op": "reply", "seq": header.get("seq"), "value": packed},
                               tensors, header.get("reply_kind"))
        elif op in ("stats", "end"):
            transport.send(0, {"op": op, "stats": counters.as_dict()})
            if op == "end":
                return counters.as_dict()
        else:
            raise ProtocolError(f"unknown op {op!r}")


def report_failure(transport: Transport, exc: BaseException) -> None:
    """Tell rank 0 this rank failed (best effort): ``error`` for its own failure, ``bye`` when
    it stops because of the run (a lost peer, an abort, a cancel)."""
    if isinstance(exc, PeerLost) and exc.rank == 0:
        return
    if isinstance(exc, PeerLost):
        header = {"op": "bye", "lost": exc.as_dict()}
    elif isinstance(exc, (RemoteError, Cancelled)):
        header = {"op": "bye"}
    else:
        header = {"op": "error", "error": f"{type(exc).__name__}: {exc}"}
    try:
        transport.send(0, header)
        transport.flush()
    except Exception:  # noqa: BLE001 - the rank is failing already
        pass
