"""What a worker may use to reach other workers directly: the point-to-point mailbox and the
collectives of its role, both on one channel per rank (see ``peers.py`` and
``collectives.py``). A program that needs them names ``RoleProgram.connect``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ml.distributed.collectives import Collectives, LocalCollectives, TransportCollectives
from ml.distributed.peers import LocalMailbox, Mailbox, PeerChannel, TransportMailbox
from ml.distributed.placement import Slot
from ml.distributed.transport import Transport


@dataclass(frozen=True)
class WorkerLinks:
    """The workers' direct links in this process."""

    mailbox: Mailbox
    collectives: Collectives


def local_links(workers: int) -> WorkerLinks:
    """Every worker in this process (the emulated runtime)."""
    return WorkerLinks(LocalMailbox(), LocalCollectives(range(workers)))


def transport_links(transport: Transport, placement: Sequence[Slot]) -> WorkerLinks:
    """The workers of a distributed run, this rank's and the others' (one shared channel)."""
    channel = PeerChannel(transport)
    host = {w: s.rank for s in placement for w in s.workers}
    return WorkerLinks(TransportMailbox(channel, host), TransportCollectives(channel, placement))
