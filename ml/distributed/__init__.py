"""Distributed runs: a method's roles on several processes or devices over torch.distributed.

The API the agent and the control plane use (see docs/distributed.md):

- :class:`Slot`, :func:`plan_placement`, :func:`testbed_of`, :class:`PlacementError`,
  :func:`supports_distributed`, :func:`worker_kind`: where the roles go and the emulated twin
  of a placement;
- :class:`Rendezvous`, :class:`LinkShape`, :func:`run_role`: run one rank's role in this
  process; :class:`PeerLost` names a lost peer;
- :func:`launch_local`: every rank as a local child process on 127.0.0.1 (tests, bench, CLI).
"""
from ml.distributed.errors import PeerLost, ProtocolError, RemoteError
from ml.distributed.local import LocalLaunch, launch_local
from ml.distributed.placement import (PlacementError, Slot, plan_placement,
                                      single_device_placement, supports_distributed, testbed_of,
                                      worker_kind)
from ml.distributed.run import run_role
from ml.distributed.shaping import LinkShape
from ml.distributed.transport import Rendezvous

__all__ = [
    "LinkShape", "LocalLaunch", "PeerLost", "PlacementError", "ProtocolError", "RemoteError",
    "Rendezvous", "Slot", "launch_local", "plan_placement", "run_role",
    "single_device_placement", "supports_distributed", "testbed_of", "worker_kind",
]
