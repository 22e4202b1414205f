"""The role program of cross-region training: one rank per region, a coordinator that reports.

Roles (ml.distributed.runtime):

- **region** (virtual worker ``m``, a :class:`Region`): trains replica ``m`` and runs the outer
  loop (:mod:`.outer_loop`) with the other regions, reached through
  :mod:`ml.distributed.collectives`: each fragment's pseudo-gradient all-reduce starts when the
  fragment is sent and is waited for τ steps later, overlapped with the inner steps between;
  CoCoDC's delay compensation runs when it arrives, with the local progress made meanwhile.
  The regions a process hosts share one loop (:class:`Regions`), so the emulated runtime, which
  hosts them all, runs exactly the loop the emulated methods always ran.
- **coordinator**: asks every region to run up to the next evaluation or round end
  (``run_until``), averages their losses, asks region 0 for held-out perplexity and the
  emulated clock (``evaluate``), reports, and checks for cancellation. No model or gradient
  passes through it.

What crosses the wire per fragment send: each region's pseudo-gradient of the fragment (fp32,
or the 4/8-bit codes and a scale per tensor) to the lowest region, the mean back; for CoCoDC
one float64 score per region and fragment choice (``kind="score"``); losses and evaluations to
the coordinator as JSON.
"""
from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ml.algorithms.cross_region.config import DiLoCoConfig
from ml.algorithms.cross_region.outer_loop import OuterLoop, SyncPolicy
from ml.algorithms.cross_region.replica import Replica
from ml.algorithms.cross_region.training import Setup, build_setup
from ml.distributed.collectives import Collectives, LocalCollectives
from ml.distributed.links import WorkerLinks
from ml.distributed.run import run_emulated
from ml.distributed.runtime import RoleProgram, Runtime, metric_safe
from ml.method_run import MethodRun
from ml.reporting import Reporter

METRICS = ("loss", "eval_loss", "perplexity", "traffic_bytes", "sim_time_s", "waiting_time_s",
           "staleness/fragment-<p>")

PolicyFn = Callable[[DiLoCoConfig, Setup], SyncPolicy]


@dataclass
class Regions:
    """What one process holds: the shared set-up, its regions' replicas and their loop."""

    config: DiLoCoConfig
    setup: Setup
    policy: SyncPolicy
    collectives: Collectives | None = None
    replicas: dict[int, Replica] = field(default_factory=dict)
    losses: dict[int, list[float]] = field(default_factory=dict)  # not yet collected
    loop: OuterLoop | None = None

    def advance(self, step: int) -> None:
        """Run this process's regions (all at once, in step) up to inner step ``step``."""
        if self.loop is None:
            collectives = self.collectives or LocalCollectives(range(self.config.workers))
            self.loop = OuterLoop([self.replicas[m] for m in collectives.local], self.policy,
                                  self.setup.wan, collectives)
        loop = self.loop
        while loop.step_count < step:
            loop.step()
            for m, loss in zip(loop.members, loop.last_losses):
                self.losses[m].append(loss)


class Region:
    """Virtual worker ``index``: one region, driven through its process's :class:`Regions`."""

    def __init__(self, regions: Regions, index: int):
        self.regions = regions
        self.index = index
        regions.replicas[index] = regions.setup.make_replica(index)
        regions.losses[index] = []

    def run_until(self, step: int) -> list[float]:
        """Train up to inner step ``step``; this region's loss at each step since the last
        call."""
        self.regions.advance(step)
        losses, self.regions.losses[self.index] = self.regions.losses[self.index], []
        return losses

    def evaluate(self) -> dict:
        """Held-out loss of this region's model, and the emulated WAN's clock and counters."""
        regions = self.regions
        loop, wan = regions.loop, regions.setup.wan
        return {"eval_loss": regions.setup.held_out_loss(regions.replicas[self.index].model),
                "sim_time_s": wan.now(), "traffic_bytes": float(wan.traffic_bytes),
                "waiting_time_s": loop.stats.blocked_s if loop else 0.0,
                "staleness": loop.staleness() if loop else [],
                "in_flight": loop.in_flight() if loop else []}

    def fragments(self) -> list[dict]:
        """Per fragment: size, payload, τ, sends and staleness at send (for the summary)."""
        loop = self.regions.loop
        out = []
        for p, frag in enumerate(loop.policy.fragments):
            intervals = loop.stats.send_intervals[p]
            out.append({
                "params": frag.numel, "payload_bytes": loop.payload[p],
                "overlap_steps": loop.tau[p], "sends": loop.stats.sends[p],
                "mean_staleness": sum(intervals) / len(intervals) if intervals else None,
                "max_staleness": max(intervals, default=None)})
        return out


def setup(config: DiLoCoConfig, device, *, make_policy: PolicyFn) -> Regions:
    """Every process: the shared set-up (no replica yet) and the method's policy."""
    shared = build_setup(config, regions=())
    return Regions(config, shared, make_policy(config, shared))


def connect(regions: Regions, links: WorkerLinks) -> None:
    regions.collectives = links.collectives


def _stops(config: DiLoCoConfig) -> list[int]:
    """Steps the coordinator stops at: evaluations, round ends (cancel checks) and the end."""
    total = config.rounds * config.inner_steps
    return [t for t in range(1, total + 1)
            if t % config.eval_every == 0 or t % config.inner_steps == 0 or t == total]


def coordinate(config: DiLoCoConfig, regions: Regions, runtime: Runtime,
               reporter: Reporter) -> dict:
    """Drive the regions to each stop; report losses, perplexity and the emulated clock."""
    run = MethodRun(reporter, regions.setup.device)
    workers = runtime.workers
    policy, wan = regions.policy, regions.setup.wan
    total = config.rounds * config.inner_steps
    distributed = runtime.execution == "distributed"
    reporter.log(f"{len(workers)} regions, {len(policy.fragments)} fragment(s), "
                 f"step {wan.step_seconds:.3f} s emulated, {total} steps")
    loss_sum, loss_count, last, done = 0.0, 0, {}, 0
    round_mark, round_sim = time.perf_counter(), 0.0
    for stop in _stops(config):
        calls = [w.call("run_until", stop) for w in workers]
        per_region = [c.result() for c in calls]
        for i in range(stop - done):
            loss_sum += sum([losses[i] for losses in per_region]) / len(per_region)
            loss_count += 1
        done = stop
        clock = None
        if stop % config.eval_every == 0 or stop == total:
            clock = workers[0].call("evaluate").result()
            last = _report(reporter, stop, loss_sum / loss_count, clock)
            loss_sum, loss_count = 0.0, 0
        if distributed and (stop % config.inner_steps == 0 or stop == total):
            clock = clock or workers[0].call("evaluate").result()
            now = time.perf_counter()
            _report_measured(reporter, runtime, stop, now - round_mark,
                             clock["sim_time_s"] - round_sim, clock["sim_time_s"])
            round_mark, round_sim = now, clock["sim_time_s"]
        if stop % config.eval_every == 0 or stop % config.inner_steps == 0:
            run.check_cancelled(f"at step {stop}")
    return run.summary(last, steps=total, step_time_s=wan.step_seconds,
                       in_flight_at_end=clock["in_flight"] if clock else [],
                       send_period=getattr(policy.schedule, "period", None),
                       fragments=workers[0].call("fragments").result(),
                       testbed=wan.testbed.describe())


def _report(reporter: Reporter, step: int, train_loss: float, clock: dict) -> dict[str, float]:
    now = clock["sim_time_s"]
    values = {
        "loss": train_loss,
        "eval_loss": clock["eval_loss"],
        "perplexity": math.exp(min(clock["eval_loss"], 50.0)),
        "traffic_bytes": clock["traffic_bytes"],
        "sim_time_s": now,
        "waiting_time_s": clock["waiting_time_s"],
    }
    for name, value in values.items():
        reporter.metric(name, step, value, now)
    for p, staleness in enumerate(clock["staleness"]):
        reporter.metric(f"staleness/fragment-{p}", step, staleness, now)
    reporter.log(f"step {step}: loss {train_loss:.3f}, held-out perplexity "
                 f"{values['perplexity']:.2f}, {now:.0f} s emulated")
    return values


def _report_measured(reporter: Reporter, runtime: Runtime, step: int, wall_s: float,
                     sim_round_s: float, now: float) -> None:
    """A distributed run's measured round: wall time beside the emulated clock's prediction,
    the payload bytes every rank sent (total, per kind, per device) and the framing."""
    stats = runtime.measure()
    reporter.metric("round_time_s", step, wall_s, now)
    reporter.metric("sim_round_time_s", step, sim_round_s, now)
    reporter.metric("measured_traffic_bytes", step,
                    sum(s["payload_sent"] for s in stats.values()), now)
    reporter.metric("framing_bytes", step, sum(s["framing_sent"] for s in stats.values()), now)
    kinds: dict[str, int] = {}
    for s in stats.values():
        for kind, nbytes in s["payload_by_kind"].items():
            kinds[kind] = kinds.get(kind, 0) + nbytes
    for kind in sorted(kinds):
        if kind != "control":
            reporter.metric(f"measured_traffic_bytes/{kind}", step, kinds[kind], now)
    for slot in getattr(runtime, "placement", []):
        if slot.role == "coordinator":  # control only; its name may be a region's too
            continue
        s = stats[slot.rank]
        reporter.metric(f"measured_traffic_bytes/{metric_safe(slot.name)}", step,
                        s["payload_sent"] + s["payload_received"], now)


def role_program(make_policy: PolicyFn) -> RoleProgram:
    """The program of the method whose loop runs under ``make_policy``."""
    return RoleProgram(setup=functools.partial(setup, make_policy=make_policy), worker=Region,
                       coordinate=coordinate, connect=connect, worker_kind="cloud",
                       exposed=frozenset({"run_until", "evaluate", "fragments"}))


def emulated(program: RoleProgram) -> Callable[[DiLoCoConfig, Reporter], dict]:
    """The method's ``run``: every region in this process on the emulated WAN."""
    return functools.partial(run_emulated, program)
