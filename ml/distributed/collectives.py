"""Collectives among the virtual workers of one role, the same in both runtimes.

Some role programs have their workers talk to each other, not only to the coordinator
(cross-region training all-reduces pseudo-gradients between its regions). A
:class:`Collectives` gives the workers a process hosts (its *local members*) broadcast, gather
and all-reduce with every other member of the role, members named by their worker index:

- :class:`LocalCollectives`: every member lives in this process (the emulated runtime); an
  operation completes when it starts.
- :class:`TransportCollectives`: members on other ranks are reached over the rank's
  :class:`~ml.distributed.peers.PeerChannel`, shared with the point-to-point mailbox (payload
  point to point through gloo, headers through the store), so liveness, shaping and the
  traffic counters are those of every other message of the run.

Every operation is **asynchronous**: it starts at once (contributions leave with ``isend``)
and returns a :class:`Pending` whose ``wait()`` gives the result, so a caller overlaps the
exchange with its own compute and waits only when it needs the result.

The root of a gather or all-reduce is a member; :meth:`Collectives.all_reduce` gathers at
the lowest member, adds the contributions **in member order** starting from zeros, and
broadcasts the sum. The result is therefore bitwise the same whatever the placement and equal
to the in-process sum, which is what lets a distributed run reproduce its emulated twin
exactly. With one member per rank it moves ``2 (M − 1) · B`` payload bytes for ``B`` bytes a
member (its ``M − 1`` contributions up, the result down), what a ring all-reduce moves.

An optional *codec* (``encode(tensor) -> wire tensors``, ``decode(wire, like) -> tensor``)
puts a compact form on the wire (e.g. quantised codes); contributions are summed as
``decode(encode(value))`` in every runtime.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from ml.distributed.errors import ProtocolError
from ml.distributed.peers import PeerChannel
from ml.distributed.placement import Slot


class Codec(Protocol):
    """What crosses the wire for one tensor, and the tensor it stands for."""

    def encode(self, t: Tensor) -> list[Tensor]: ...

    def decode(self, wire: list[Tensor], like: Tensor) -> Tensor: ...


class Pending:
    """A started operation; :meth:`wait` returns its result (once, then cached)."""

    def __init__(self, finish: Callable[[], Any]):
        self._finish: Callable[[], Any] | None = finish
        self._value: Any = None

    @property
    def done(self) -> bool:
        return self._finish is None

    def wait(self) -> Any:
        if self._finish is not None:
            self._value = self._finish()
            self._finish = None
        return self._value


def _ready(value: Any) -> Pending:
    pending = Pending(lambda: value)
    pending.wait()
    return pending


def _round_trip(tensors: Sequence[Tensor], codec: Codec | None) -> list[Tensor]:
    if codec is None:
        return list(tensors)
    return [codec.decode(codec.encode(t), t) for t in tensors]


def sum_in_order(contributions: dict[int, Sequence[Tensor]], *, mean: bool) -> list[Tensor]:
    """Σ_m contributions[m] (then ÷ M when ``mean``), added from zeros in member order."""
    members = sorted(contributions)
    total = [torch.zeros_like(t) for t in contributions[members[0]]]
    for m in members:
        for acc, t in zip(total, contributions[m]):
            acc.add_(t)
    if mean:
        for acc in total:
            acc.div_(len(members))
    return total


class Collectives(abc.ABC):
    """Broadcast, gather and all-reduce among the members of one role (see the module)."""

    members: tuple[int, ...]  # every member of the role, in order
    local: tuple[int, ...]  # the members hosted by this process

    @property
    def root(self) -> int:
        return self.members[0]

    @abc.abstractmethod
    def broadcast(self, tag: str, tensors: Sequence[Tensor] | None, root: int | None = None,
                  *, kind: str | None = None) -> Pending:
        """Member ``root``'s ``tensors`` (None elsewhere) to every process; a Pending of them."""
        raise NotImplementedError

    @abc.abstractmethod
    def gather(self, tag: str, values: dict[int, Sequence[Tensor]], root: int | None = None,
               *, kind: str | None = None, codec: Codec | None = None) -> Pending:
        """Every local member's ``values[m]`` to ``root``'s process; a Pending of ``{member:
        tensors}`` there (decoded when a codec is given) and of None elsewhere."""
        raise NotImplementedError

    def all_reduce(self, tag: str, values: dict[int, Sequence[Tensor]], *, mean: bool = False,
                   kind: str | None = None, codec: Codec | None = None) -> Pending:
        """The sum (or mean) over every member of ``values[m]``, given by each process for its
        local members; a Pending of the result, the same tensors in every process."""
        self._check(values)
        gathered = self.gather(tag, values, self.root, kind=kind, codec=codec)

        def finish() -> list[Tensor]:
            contributions = gathered.wait()
            total = sum_in_order(contributions, mean=mean) if contributions is not None \
                else None
            return self.broadcast(tag, total, self.root, kind=kind).wait()
        return Pending(finish)

    def _check(self, values: dict[int, Sequence[Tensor]]) -> None:
        if sorted(values) != sorted(self.local):
            raise ValueError(f"values are given for members {sorted(values)}, this process "
                             f"hosts {sorted(self.local)}")


class LocalCollectives(Collectives):
    """Every member in this process: operations complete when they start."""

    def __init__(self, members: Iterable[int]):
        self.members = tuple(sorted(members))
        if not self.members:
            raise ValueError("a group needs at least one member")
        self.local = self.members

    def broadcast(self, tag, tensors, root=None, *, kind=None) -> Pending:
        return _ready(list(tensors))

    def gather(self, tag, values, root=None, *, kind=None, codec=None) -> Pending:
        self._check(values)
        return _ready({m: _round_trip(values[m], codec) for m in sorted(values)})


class TransportCollectives(Collectives):
    """Members spread over the ranks of a distributed run (the slots of ``role``).

    One message per operation and pair of ranks: a rank's contribution to a gather carries
    all its local members' tensors; messages are matched by ``tag``, so operations may be
    waited for in another order than they were started.
    """

    def __init__(self, channel: PeerChannel, placement: Sequence[Slot], role: str = "worker"):
        self.channel = channel
        self.host = {w: s.rank for s in placement if s.role == role for w in s.workers}
        self.members = tuple(sorted(self.host))
        if not self.members:
            raise ValueError(f"the placement has no {role!r} members")
        self.local = tuple(m for m in self.members if self.host[m] == channel.rank)

    def _ranks(self) -> list[int]:
        return sorted(set(self.host.values()))

    def broadcast(self, tag, tensors, root=None, *, kind=None) -> Pending:
        root = self.root if root is None else root
        source = self.host[root]
        if source == self.channel.rank:
            tensors = list(tensors)
            for rank in self._ranks():
                if rank != source:
                    self.channel.send(rank, _key(tag), tensors, kind)
            return _ready(tensors)
        return Pending(lambda: self._take(source, tag).tensors)

    def gather(self, tag, values, root=None, *, kind=None, codec=None) -> Pending:
        self._check(values)
        root = self.root if root is None else root
        target = self.host[root]
        mine = sorted(values)
        if target != self.channel.rank:
            wire = [w for m in mine for t in values[m]
                    for w in (codec.encode(t) if codec else [t])]
            per = len(wire) // max(1, sum(len(values[m]) for m in mine))
            self.channel.send(target, _key(tag), wire, kind, members=mine, per=per,
                              counts=[len(values[m]) for m in mine])
            return _ready(None)
        likes = values[mine[0]] if mine else None

        def finish() -> dict[int, list[Tensor]]:
            out = {m: _round_trip(values[m], codec) for m in mine}
            for rank in self._ranks():
                if rank != target:
                    out.update(self._unpack(self._take(rank, tag), codec, likes))
            return dict(sorted(out.items()))
        return Pending(finish)

    def _unpack(self, message, codec: Codec | None,
                likes: Sequence[Tensor] | None) -> dict[int, list[Tensor]]:
        header = message.header
        members, counts, per = header.get("members"), header.get("counts"), header.get("per")
        if not isinstance(members, list) or not isinstance(counts, list) or \
                len(members) != len(counts) or any(self.host.get(m) != message.src
                                                   for m in members) or \
                not isinstance(per, int) or \
                not all(isinstance(c, int) for c in counts) or \
                len(message.tensors) != per * sum(counts):
            raise ProtocolError(f"rank {message.src} sent a malformed contribution")
        tensors, out, at = message.tensors, {}, 0
        for m, count in zip(members, counts):
            values = []
            for i in range(count):
                wire = tensors[at:at + per]
                at += per
                values.append(codec.decode(wire, likes[i]) if codec else wire[0])
            out[m] = values
        return out

    def _take(self, rank: int, tag: str):
        """The message ``tag`` from ``rank``; others from it are kept for their own waits."""
        return self.channel.take(rank, _key(tag))


def _key(tag: str) -> str:
    return f"collective:{tag}"
