"""The one serving loop of the device-cloud methods; a method is a :class:`ServingPolicy` of it.

Every worker device of the testbed sends one request (a held-out prompt) at time 0. The cloud
(the coordinator) runs the event engine (:mod:`.engine`): it starts one process per device
(the policy's protocol, :mod:`.protocols`), serves the devices' requests in batches, and
charges the emulated clock for every pass and transfer. What runs on a device runs on its
device role (:mod:`.devices`), which the runtime reaches in-process (emulated) or on the
device's rank (distributed), in the order the engine decides, so both runtimes compute the same
tokens. The loop then reports TTFT, TBT, acceptance and traffic; a distributed run adds the
wall-clock TTFT and TBT the cloud measured and the traffic the ranks measured.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ml.algorithms.device_cloud_inference.config import ServingConfig
from ml.algorithms.device_cloud_inference.cost import served_models
from ml.algorithms.device_cloud_inference.engine import Engine, ProcessFn
from ml.algorithms.device_cloud_inference.models import ServedLM, prompts, served_llm
from ml.algorithms.device_cloud_inference.protocols import Context, Trace
from ml.distributed.runtime import Runtime
from ml.method_run import MethodRun, torch_device
from ml.models.transformer import DecoderLM
from ml.reporting import Reporter
from ml.testbed import resolve_testbed


@dataclass(frozen=True)
class Loaded:
    """What a policy loads on every rank: its models, their figures for the summary, and the
    real draft LM whose shape the clock charges (device-cloud SD)."""

    parts: Any
    models: dict
    clock_draft: DecoderLM | None = None


class ServingPolicy(Protocol):
    """What one device-cloud method adds to the serving loop."""

    #: the device role's methods the cloud may call
    exposed: frozenset[str]

    def load(self, config: ServingConfig) -> Loaded:
        """The method's models (cached; the same on every rank)."""

    def device(self, config: ServingConfig, parts: Any, prompt: list[int],
               generator: torch.Generator) -> object:
        """The device role for one request."""

    def cloud(self, parts: Any) -> Any:
        """The cloud's state shared by every request (e.g. the middle's KV caches)."""

    def process(self, config: ServingConfig, parts: Any, cloud: Any, ctx: Context,
                trace: Trace) -> ProcessFn:
        """The engine process serving one request."""


@dataclass
class ServingContext:
    """What every rank builds: the served LM, the method's models, every request's prompt
    and random generator (a device's and the cloud's side of one request use the same seed;
    in an emulated run they are one generator)."""

    config: ServingConfig
    policy: ServingPolicy
    source: ServedLM
    loaded: Loaded
    prompts: list[list[int]]
    generators: list[torch.Generator]


def setup(policy: ServingPolicy, config: ServingConfig, device: torch.device) -> ServingContext:
    loaded = policy.load(config)
    source = served_llm(config)
    requests = prompts(source.val, config.workers, config.prompt_tokens, config.seed)
    # one generator per request, seeded as before the role split (same figures)
    generators = [torch.Generator().manual_seed(config.seed * 100_003 + i)
                  for i in range(config.workers)]
    return ServingContext(config, policy, source, loaded, requests, generators)


def device_role(context: ServingContext, index: int) -> object:
    """The role of worker device ``index``: its request's device side."""
    return context.policy.device(context.config, context.loaded.parts, context.prompts[index],
                                 context.generators[index])


def serve(config: ServingConfig, context: ServingContext, runtime: Runtime,
          reporter: Reporter) -> dict:
    """The cloud's role: run every device's request on the engine; report; the summary."""
    run = MethodRun(reporter, torch_device(config.device))
    policy, loaded = context.policy, context.loaded
    testbed = resolve_testbed(config.testbed, workers=config.workers)
    cut = (getattr(config, "input_layers", 1), getattr(config, "output_layers", 1))
    served = served_models(config.served_model, context.source.model, loaded.clock_draft, *cut,
                           getattr(config, "adapter_layers", 1))
    engine = Engine(testbed, config.cloud_batch_tokens, reporter.should_stop, config.cloud_share)
    cloud = policy.cloud(loaded.parts)
    for ready in [role.call("ready") for role in runtime.workers]:
        ready.result()  # every device role is built before the clock starts
    wall_start = time.perf_counter()
    if runtime.execution == "distributed":  # the ranks' start-up, measured
        reporter.metric("setup_wall_s", 0, wall_start - run.started, 0.0)
    traces = []
    for i, (device, role) in enumerate(zip(testbed.workers, runtime.workers)):
        ctx = Context(engine, served, device, config.prompt_tokens, config.new_tokens,
                      config.temperature, context.generators[i], role)
        trace = Trace(device.name, wall_start_s=wall_start)
        traces.append(trace)
        engine.start(device, policy.process(config, loaded.parts, cloud, ctx, trace))
    makespan = engine.run()
    runtime.flush()
    measured = None
    if runtime.execution == "distributed":
        measured = runtime.gather_stats()
    return summarise(run, engine, traces, makespan, loaded.models, measured)


def summarise(run: MethodRun, engine: Engine, traces: list[Trace], makespan: float,
              models: dict, measured: dict[int, dict] | None = None) -> dict:
    """Report per-device and running-mean points; return the run's summary. ``measured``: the
    ranks' counters of a distributed run (adds the wall-clock and measured figures)."""
    reporter = run.reporter
    done = sorted(traces, key=lambda t: t.token_times[-1])
    for step, trace in enumerate(done, start=1):
        end = trace.token_times[-1]
        reporter.metric(f"ttft_ms/{trace.device}", 0, trace.ttft_s * 1e3, end)
        reporter.metric(f"tbt_ms/{trace.device}", 0, trace.tbt_s * 1e3, end)
        reporter.metric("ttft_ms", step, 1e3 * sum(t.ttft_s for t in done[:step]) / step, end)
        reporter.metric("tbt_ms", step, 1e3 * sum(t.tbt_s for t in done[:step]) / step, end)
    ledger = engine.testbed.traffic.bytes
    generated = sum(len(t.tokens) for t in traces)

    def traffic(direction: str, kind: str | None = None) -> int:
        return sum(b for k, b in ledger.items() if k.direction == direction
                   and (kind is None or k.kind == kind))
    stats = [t.stats for t in traces if t.stats is not None]
    rounds = sum(s.rounds for s in stats)
    final = {
        "ttft_ms": 1e3 * sum(t.ttft_s for t in traces) / len(traces),
        "tbt_ms": 1e3 * sum(t.tbt_s for t in traces) / len(traces),
        "uplink_bytes_per_token": traffic("up", "decode") / generated,
        "downlink_bytes_per_token": traffic("down", "decode") / generated,
        "prefill_uplink_bytes": traffic("up", "prefill") / len(traces),
        "traffic_bytes": float(engine.testbed.traffic.total()),
        "sim_time_s": makespan,
        "cloud_batches": len(engine.batches),
        "cloud_mean_batch_requests": (sum(b.requests for b in engine.batches)
                                      / max(1, len(engine.batches))),
    }
    if rounds:
        final["acceptance_rate"] = (sum(s.accepted for s in stats)
                                    / max(1, sum(s.drafted for s in stats)))
        final["tokens_per_round"] = sum(s.committed_in_rounds for s in stats) / rounds
    details: dict = {"traffic_by_kind": {kind: traffic("up", kind) + traffic("down", kind)
                                         for kind in sorted({k.kind for k in ledger})}}
    if measured is not None:
        final["wall_ttft_ms"] = 1e3 * sum(t.wall_ttft_s for t in traces) / len(traces)
        final["wall_tbt_ms"] = 1e3 * sum(t.wall_tbt_s for t in traces) / len(traces)
        final["wall_serving_s"] = max(t.wall_token_times[-1] for t in traces) - \
            traces[0].wall_start_s
        final["measured_traffic_bytes"] = float(sum(s["payload_sent"]
                                                    for s in measured.values()))
        final["framing_bytes"] = float(sum(s["framing_sent"] for s in measured.values()))
        kinds: dict[str, int] = {}
        for s in measured.values():
            for kind, nbytes in s["payload_by_kind"].items():
                if nbytes:
                    kinds[kind] = kinds.get(kind, 0) + nbytes
        details["measured_traffic_by_kind"] = dict(sorted(kinds.items()))
    for name in ("acceptance_rate", "tokens_per_round", "uplink_bytes_per_token",
                 "downlink_bytes_per_token", "prefill_uplink_bytes", "traffic_bytes",
                 "wall_ttft_ms", "wall_tbt_ms", "measured_traffic_bytes", "framing_bytes"):
        if name in final:
            reporter.metric(name, len(done), final[name], makespan)
    reporter.metric("sim_time_s", len(done), makespan, makespan)
    chunks = [t.chunk_size for t in traces if t.chunk_size is not None]
    devices = []
    for t in traces:
        row = {"device": t.device, "ttft_ms": t.ttft_s * 1e3, "tbt_ms": t.tbt_s * 1e3,
               "chunk_size": t.chunk_size, "tokens": len(t.tokens), "output": t.tokens}
        if measured is not None:
            row.update(wall_ttft_ms=t.wall_ttft_s * 1e3, wall_tbt_ms=t.wall_tbt_s * 1e3)
        devices.append(row)
    return run.summary(final, models=models, devices=devices, chunk_sizes=sorted(set(chunks)),
                       **details)
