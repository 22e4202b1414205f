"""Worker-to-worker messages: how one virtual worker hands tensors to another directly.

The coordinator still drives (it triggers every step with a call or cast), but a payload that
one worker produces and another consumes need not pass through it: ParallelSFL's members send
their features to their cluster's top worker, which sends the gradient slices back. Every
message between worker ranks travels on one :class:`PeerChannel` per rank (op ``peer``, filed
under its sending rank and a key until taken), which the point-to-point :class:`Mailbox` here
and the collectives of :mod:`ml.distributed.collectives` share; a program receives both as
:class:`ml.distributed.links.WorkerLinks` through ``RoleProgram.connect``:

- :class:`LocalMailbox`: every worker in this process (the emulated run, and workers that
  share a rank); a message waits in a queue until its receiver takes it.
- :class:`TransportMailbox`: the distributed run; a message to a worker on another rank goes
  through the channel (the tensors point to point, counted under its ``kind``) and waits there
  until its receiver takes it.

Ordering contract: a receive must follow its send in the coordinator's program order (a rank
runs its calls in that order; the emulated runtime needs ``runtime.flush()`` between a send and
the call that receives it, because it runs each worker's calls lazily).
"""
from __future__ import annotations

import abc
import collections
from typing import Any

import torch

from ml.distributed.errors import ProtocolError
from ml.distributed.transport import Message, Transport

OP = "peer"


class PeerChannel:
    """The messages between worker ranks of one rank's run, outside the coordinator's calls:
    each is filed under (sending rank, key) until taken, so the mailbox and the collectives
    share the rank pairs without reading each other's messages."""

    def __init__(self, transport: Transport):
        self.transport = transport
        self._stash: dict[tuple[int, str], collections.deque] = collections.defaultdict(
            collections.deque)

    @property
    def rank(self) -> int:
        return self.transport.rank

    def send(self, rank: int, key: str, tensors: list[torch.Tensor], kind: str | None = None,
             **header: Any) -> None:
        self.transport.send(rank, {"op": OP, "key": key, **header}, list(tensors), kind)

    def take(self, rank: int, key: str) -> Message:
        """The oldest message ``key`` from ``rank``; others that arrive first wait their turn."""
        queue = self._stash[(rank, key)]
        while not queue:
            message = self.transport.recv(rank)
            if message.header.get("op") != OP or not isinstance(message.header.get("key"), str):
                raise ProtocolError(f"rank {rank} sent {message.header.get('op')!r} where a "
                                    f"worker message was expected")
            self._stash[(rank, message.header["key"])].append(message)
        return queue.popleft()


class Mailbox(abc.ABC):
    """Tensors from one virtual worker to another, in the order they were sent."""

    @abc.abstractmethod
    def send(self, src: int, dst: int, tensors: list[torch.Tensor],
             kind: str | None = None) -> None:
        raise NotImplementedError

    @abc.abstractmethod
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
    """Workers on several ranks: a message to a worker hosted elsewhere crosses the channel."""

    def __init__(self, channel: PeerChannel, host: dict[int, int]):
        super().__init__()
        self.channel = channel
        self.host = host  # virtual worker -> the rank hosting it

    def send(self, src, dst, tensors, kind=None) -> None:
        rank = self.host[dst]
        if rank == self.channel.rank:
            super().send(src, dst, tensors, kind)
            return
        self.channel.send(rank, f"mail:{src}:{dst}", tensors, kind)

    def recv(self, dst, src) -> list[torch.Tensor]:
        rank = self.host[src]
        if rank == self.channel.rank:
            return super().recv(dst, src)
        return self.channel.take(rank, f"mail:{src}:{dst}").tensors
