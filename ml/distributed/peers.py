"""Worker-to-worker messages: how one virtual worker hands tensors to another directly.

The coordinator still drives (it triggers every step with a call or cast), but a payload that
one worker produces and another consumes need not pass through it: ParallelSFL's members send
their features to their cluster's top worker, which sends the gradient slices back. A worker
object of a program with ``RoleProgram.peers`` set gets a :class:`Mailbox` through
``attach_peers(mailbox)`` before the run starts:

- :class:`LocalMailbox`: every worker in this process (the emulated run, and workers that
  share a rank); a message waits in a queue until its receiver takes it.
- :class:`TransportMailbox`: the distributed run; a message to a worker on another rank goes
  through the transport (header ``op: "peer"``, the tensors point to point, counted under its
  ``kind``) and waits in the receiver's queue until taken.

Ordering contract: a receive must follow its send in the coordinator's program order (a rank
runs its calls in that order; the emulated runtime needs ``runtime.flush()`` between a send and
the call that receives it, because it runs each worker's calls lazily).
"""
from __future__ import annotations

import collections

import torch

from ml.distributed.errors import ProtocolError
from ml.distributed.transport import Transport


class Mailbox:
    """Tensors from one virtual worker to another, in the order they were sent."""

    def send(self, src: int, dst: int, tensors: list[torch.Tensor],
             kind: str | None = None) -> None:
        raise NotImplementedError

    def recv(self, dst: int, src: int) -> list[torch.Tensor]:
        raise NotImplementedError


class LocalMailbox(Mailbox):
    """Every worker in this process."""

    def __init__(self) -> None:
        self._queues: dict[tuple[int, int], collections.deque] = collections.defaultdict(
            collections.deque)

    def send(self, src, dst, tensors, kind=None) -> None:
        self._queues[(src, dst)].append(list(tensors))

    def recv(self, dst, src) -> list[torch.Tensor]:
        queue = self._queues[(src, dst)]
        if not queue:
            raise ProtocolError(f"worker {dst} expects a message from worker {src} that was "
                                f"not sent before")
        return queue.popleft()


class TransportMailbox(LocalMailbox):
    """Workers on several ranks: a message to a worker hosted elsewhere crosses the transport."""

    def __init__(self, transport: Transport, host: dict[int, int]):
        super().__init__()
        self.transport = transport
        self.host = host  # virtual worker -> the rank hosting it

    def send(self, src, dst, tensors, kind=None) -> None:
        rank = self.host[dst]
        if rank == self.transport.rank:
            super().send(src, dst, tensors, kind)
            return
        self.transport.send(rank, {"op": "peer", "from": src, "to": dst}, list(tensors), kind)

    def recv(self, dst, src) -> list[torch.Tensor]:
        rank = self.host[src]
        while rank != self.transport.rank and not self._queues[(src, dst)]:
            message = self.transport.recv(rank)
            header = message.header
            if header.get("op") != "peer" or header.get("to") not in self.host \
                    or self.host[header["to"]] != self.transport.rank:
                raise ProtocolError(f"rank {rank} sent {header.get('op')!r} where a worker "
                                    f"message was expected")
            self._queues[(header.get("from"), header["to"])].append(message.tensors)
        return super().recv(dst, src)
