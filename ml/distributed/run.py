"""``run_role``: one rank's part of a distributed run, in this process."""
from __future__ import annotations

from typing import Callable

from ml import registry
from ml.distributed.errors import PeerLost
from ml.distributed.links import local_links, transport_links
from ml.distributed.placement import Slot
from ml.distributed.runtime import DistributedRuntime, EmulatedRuntime, RoleProgram
from ml.distributed.serve import report_failure, serve
from ml.distributed.shaping import LinkShape
from ml.distributed.transport import Peer, Rendezvous, Transport
from ml.method_run import seeded_run, torch_device
from ml.reporting import Cancelled, Reporter


def program_of(method: str) -> RoleProgram:
    program = registry.get(method).program
    if program is None:
        raise ValueError(f"method {method!r} has no role program; it cannot run distributed")
    return program


def run_emulated(program: RoleProgram, config, reporter: Reporter) -> dict:
    """Run every role of ``program`` in this process on the emulated testbed."""
    device = torch_device(config.device)
    with seeded_run(config.seed, device):
        context = program.setup(config, device)
        count = program.workers(config)
        if program.connect is not None:
            program.connect(context, local_links(count))
        runtime = EmulatedRuntime([program.worker(context, w) for w in range(count)],
                                  threads=program.threads(config))
        try:
            return program.coordinate(config, context, runtime, reporter)
        finally:
            runtime.close()


def run_role(method: str, config: dict, placement: list[Slot], rank: int,
             rendezvous: Rendezvous, reporter: Reporter, *,
             on_store_ready: Callable[[int], None] | None = None,
             shape: LinkShape | None = None) -> dict:
    """Run ``rank``'s role of a distributed run of ``method`` in this process; its summary.

    See ``ml.distributed`` (the contract with the agent): rank 0 hosts the store, coordinates
    and reports; the other ranks serve their virtual workers. Raises PeerLost naming a lost
    peer, Cancelled when the run was cancelled.
    """
    entry = registry.get(method)
    parsed = entry.parse_config(config)
    slots = sorted(placement, key=lambda s: s.rank)
    if entry.program is None:
        return _run_single_device(entry, parsed, slots, reporter)
    program = program_of(method)
    if [s.rank for s in slots] != list(range(len(slots))) or slots[0].role != "coordinator":
        raise ValueError("the placement must have ranks 0..n-1 with the coordinator at 0")
    mine = slots[rank]
    peers = [Peer(s.rank, s.device, s.name) for s in slots]
    device = torch_device(parsed.device)
    transport = Transport(peers, rank, rendezvous, shape=shape, on_store_ready=on_store_ready,
                          use_cuda=device.type == "cuda",
                          stop_check=reporter.should_stop if rank == 0 else None)
    if rank == 0:
        return _coordinate(program, parsed, slots, transport, reporter, device)
    try:
        with seeded_run(parsed.seed, device):
            context = program.setup(parsed, device)
            if program.connect is not None:
                program.connect(context, transport_links(transport, slots))
            objects = {w: program.worker(context, w) for w in mine.workers}
            counters = serve(transport, objects, program.exposed)
    except BaseException as exc:
        report_failure(transport, exc)
        transport.close(graceful=False)
        raise
    transport.close()
    return {"execution": "distributed", "rank": rank, "device": mine.device,
            "workers": list(mine.workers), **counters}


def _run_single_device(entry: registry.Method, config, slots: list[Slot],
                       reporter: Reporter) -> dict:
    """A method without roles in a distributed run: the whole run here, on its one device."""
    if len(slots) != 1:
        raise ValueError(f"{entry.name} is a single-device method: its placement must be one "
                         f"device, got {len(slots)}")
    reporter.log(f"{entry.name} is a single-device method: the whole run executes on "
                 f"{slots[0].name}")
    result = entry.run(config, reporter)
    return {**result, "execution": "distributed", "single_device": slots[0].name}


def _coordinate(program: RoleProgram, config, slots: list[Slot], transport: Transport,
                reporter: Reporter, device) -> dict:
    runtime = DistributedRuntime(transport, slots, program.workers(config))
    try:
        with seeded_run(config.seed, device):
            context = program.setup(config, device)
            runtime.reset_clock()
            result = program.coordinate(config, context, runtime, reporter)
        runtime.finish()
    except Cancelled:
        runtime.abort({"op": "stop"})
        transport.close(graceful=False)
        raise
    except PeerLost as exc:
        runtime.abort({"op": "abort", "lost": exc.as_dict()}, lost=exc.rank)
        transport.close(graceful=False)
        raise
    except BaseException as exc:
        runtime.abort({"op": "abort", "error": f"the coordinator failed: "
                                               f"{type(exc).__name__}: {exc}"})
        transport.close(graceful=False)
        raise
    transport.close()
    return {**result, **runtime.summary()}
