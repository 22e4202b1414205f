"""The roles of federated fine-tuning: one program for FedSpine and its baselines, the
strategy (ml.algorithms.federated_fine_tuning.strategies) fills the gaps.

Per round (every client takes part, ours):
1. the strategy plans each client's (rank, target sparsity) — S-UCB for FedSpine;
2. the server sends each client its pruning plan (the structure it trains from), its slice of
   the global adapters at its rank and the classification head;
3. clients run :func:`.training.local_round`; their devices' clocks advance by the FLOPs spent;
4. clients upload adapters and head; the server aggregates the adapters with the strategy's
   aggregator and averages the head by sample count (FedAvg);
5. the strategy gets the feedback (bandit rewards, HetLoRA rank self-pruning);
6. evaluation (:mod:`.evaluation`): each client's *deployed* model on the held-out windows.

Roles (ml.distributed.runtime): the server is :func:`coordinate`, each client a
:class:`.training.FineTuneClient` whose ``train`` the server calls; the same program runs
emulated or distributed. Only the server knows the strategy's state (bandits, ranks, the
clients' structures); a client keeps its data, batch order and importance scores.

Emulated time (unchanged from the first, single-process design): the server handles the clients
one after another on its clock — it sends client k its slice once client k-1's upload has
arrived — so the emulated round time is the sum of the clients' download, compute and upload.
A distributed run trains the clients concurrently and reports the emulated prediction beside
the measured time (``sim_round_time_s``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ml.algorithms.federated_fine_tuning.adapters import LoRAState, scatter_state, slice_state
from ml.algorithms.federated_fine_tuning.config import LoRAFedConfig
from ml.algorithms.federated_fine_tuning.evaluation import Evaluator
from ml.algorithms.federated_fine_tuning.importance import ImportanceTracker
from ml.algorithms.federated_fine_tuning.measure import state_bytes
from ml.algorithms.federated_fine_tuning.strategies import ClientView, Strategy
from ml.algorithms.federated_fine_tuning.structure import Structure, sparsity
from ml.algorithms.federated_fine_tuning.task import TopicData, load_base, load_topic_data
from ml.algorithms.federated_fine_tuning.training import (ClientData, FineTuneClient, Head,
                                                          Workspace)
from ml.data.partition import partition
from ml.distributed.runtime import RoleProgram, Runtime
from ml.fl.batches import BatchStream
from ml.fl.reporting import RoundLog
from ml.fl.waiting import WaitingLedger, round_end_barrier
from ml.method_run import MethodRun, generator
from ml.models.lora import lora_state_dict
from ml.models.transformer import DecoderLM
from ml.reporting import Reporter
from ml.testbed.emulator import Testbed
from ml.testbed.presets import resolve_testbed

PROBE_SAMPLES = 64
#: What the server may call on a client.
EXPOSED = frozenset({"train"})


@dataclass
class FineTuneContext:
    """What every rank builds: base, data, testbed, shards and the initial global state."""

    config: LoRAFedConfig
    strategy: Strategy
    base: DecoderLM
    base_info: dict
    data: TopicData
    testbed: Testbed
    ws: Workspace
    method: str  # the catalogue name, for the log
    head: Head  # the initial global classification head
    global_lora: LoRAState  # the initial global adapters (A random, B zero: ΔW = 0)
    shards: list[torch.Tensor]


def setup(config: LoRAFedConfig, strategy: Strategy, method: str) -> FineTuneContext:
    """Load the base and the task, split the data, draw the initial adapters and head (from
    the run's seeded global RNG, so every rank draws the same)."""
    base, base_info = load_base(config.base)
    data = load_topic_data(seq_len=base.cfg.max_seq_len, seed=0, max_test=config.test_samples,
                           task=config.dataset)
    testbed = resolve_testbed(config.testbed, config.workers)
    ws = Workspace(base, data.train_x, data.train_y, config.lr, config.lora_scaling,
                   strategy.prune_every, config.local_steps)
    layer = torch.nn.Linear(base.cfg.d_model, data.num_classes)
    head = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    template = ws.model(head, Structure.full(base), strategy.max_rank, None)
    global_lora = lora_state_dict(template)
    ws.adapter_shapes = {k: torch.zeros_like(v) for k, v in global_lora.items()}
    parts = partition(data.train_y.numpy(), config.workers, config.partition, seed=config.seed,
                      alpha=config.partition_alpha, min_size=PROBE_SAMPLES,
                      num_classes=data.num_classes)
    return FineTuneContext(config, strategy, base, base_info, data, testbed, ws, method, head,
                           global_lora, [torch.from_numpy(idx) for idx in parts.indices])


def make_client(context: FineTuneContext, index: int) -> FineTuneClient:
    """Client ``index``: its shard's batch stream and probe batch, fresh importance scores."""
    config, data, shard = context.config, context.data, context.shards[index]
    cfg = context.base.cfg
    probe = shard[torch.randperm(len(shard), generator=generator(config.seed, "probe", index))
                  [:PROBE_SAMPLES]]
    return FineTuneClient(context.ws, ClientData(
        index=index,
        stream=BatchStream(shard, config.batch_size, generator(config.seed, "shuffle", index)),
        probe_x=data.train_x[probe], probe_y=data.train_y[probe],
        tracker=ImportanceTracker(cfg.n_layers, cfg.n_heads, cfg.d_ff,
                                  getattr(config, "importance_ema", 0.9))))


class Server:
    """The server's state: the clients as it knows them, the global adapters and head."""

    def __init__(self, context: FineTuneContext):
        self.config = context.config
        self.strategy = context.strategy
        self.base = context.base
        self.testbed = context.testbed
        self.device = self.testbed.require_server()
        self.head_dim = context.ws.head_dim
        self.global_lora = {k: v.clone() for k, v in context.global_lora.items()}
        self.head = {k: v.clone() for k, v in context.head.items()}
        full = Structure.full(context.base)
        self.clients = [ClientView(i, device, len(shard), full)
                        for i, (device, shard) in enumerate(zip(self.testbed.workers,
                                                                context.shards))]
        self.strategy.setup(self)

    def round(self, step: int, runtime: Runtime, log: RoundLog, waiting: WaitingLedger,
              evaluator: Evaluator) -> None:
        tb, server, clients = self.testbed, self.device, self.clients
        plans = self.strategy.plans(self, step)
        start = tb.barrier([server, *(c.device for c in clients)])
        head_bytes = state_bytes(self.head)
        downs = [slice_state(self.global_lora, c.structure, plan.rank, self.head_dim)
                 for c, plan in zip(clients, plans)]
        # Every client trains at once (in a distributed run); the emulated clock is charged
        # below in the server's order, as the single-process design did.
        fits = [runtime.workers[c.index].call("train", plan, c.structure, down, self.head,
                                              kind="lora", reply_kind="lora")
                for c, plan, down in zip(clients, plans, downs)]
        aggregator = self.strategy.aggregator(self.global_lora)
        head_sum = {k: torch.zeros_like(v) for k, v in self.head.items()}
        head_weight = 0.0
        results, times = [], []
        for client, down, fit in zip(clients, downs, fits):
            tb.transfer(server, client.device, state_bytes(down) + head_bytes, "lora")
            result = fit.result()
            tb.compute(client.device, result.flops)
            arrival = tb.send(client.device, server, state_bytes(result.state) + head_bytes,
                              "lora")
            tb.receive(server, arrival)
            times.append(arrival - start)
            full, masks = scatter_state(result.state, result.structure, result.rank,
                                        self.head_dim, self.global_lora)
            aggregator.add(full, masks, self.strategy.weight(client, result))
            for k, v in result.classifier.items():
                head_sum[k] += client.num_samples * v
            head_weight += client.num_samples
            client.structure = result.structure
            results.append(result)
        end, idle = round_end_barrier(tb, [server, *(c.device for c in clients)])
        waiting.add_by_device(idle)
        self.global_lora = aggregator.result(self.global_lora)
        self.head = {k: v / head_weight for k, v in head_sum.items()}
        extra = self.strategy.feedback(self, step, plans, results, times)

        log.metric("sparsity", step, float(np.mean([r.sparsity_after for r in results])))
        for client, plan, result, t in zip(clients, plans, results, times):
            log.metric(f"sparsity/{client.name}", step, result.sparsity_after)
            log.metric(f"rank/{client.name}", step, plan.rank)
            log.metric(f"ratio/{client.name}", step, plan.ratio)
            log.metric(f"completion_time_s/{client.name}", step, t)
        for name, value in extra.items():
            log.metric(name, step, value)
        evaluation = None
        if step % self.config.eval_every == 0 or step == self.config.rounds:
            evaluation = evaluator.evaluate(step, log, clients, self.head, self.global_lora,
                                            plans)
        train_loss = float(np.average([r.train_loss for r in results],
                                      weights=[r.samples for r in results]))
        runtime.report_round(log, step, end - start, train_loss, evaluation, waiting)


def coordinate(config: LoRAFedConfig, context: FineTuneContext, runtime: Runtime,
               reporter: Reporter) -> dict:
    """The server's role: plan, send, collect and aggregate every round; evaluate."""
    run = MethodRun(reporter, torch.device("cpu"))
    server = Server(context)
    log = RoundLog(reporter, context.testbed)
    waiting = WaitingLedger([c.device.name for c in server.clients])
    evaluator = Evaluator(context.ws, context.data, context.strategy.max_rank,
                          config.batch_size)
    if config.device != "cpu":
        reporter.log(f"{context.method}: runs on CPU (the emulated testbed charges the "
                     "device's time)")
    reporter.log(f"{context.method}: {len(server.clients)} clients on "
                 f"{context.testbed.describe()[0]['profile']}..., base {config.base} (val "
                 f"perplexity {context.base_info['val_perplexity']:.2f}), "
                 f"{len(context.data.train_y)} training windows, {len(context.data.test_y)} test")
    for step in range(1, config.rounds + 1):
        run.check_cancelled(f"before round {step}")
        server.round(step, runtime, log, waiting, evaluator)
    log.final["inference_wall_ms"] = evaluator.final_latency_ms(server.clients, server.head,
                                                                server.global_lora)
    base = context.base
    return run.summary(
        log.final, rounds=config.rounds, sim_time_s=context.testbed.now(),
        base={"name": config.base, "params": base.num_parameters(),
              "val_perplexity": context.base_info["val_perplexity"],
              "unigram_perplexity": context.base_info["unigram_perplexity"]},
        clients=[{"name": c.name, "device": c.device.name, "profile": c.device.profile.name,
                  "samples": c.num_samples, "sparsity": sparsity(base, c.structure),
                  "heads": [list(h) for h in c.structure.heads],
                  "channels_kept": [len(ch) for ch in c.structure.channels]}
                 for c in server.clients])


def program_for(method: str, strategy: Callable[[LoRAFedConfig], Strategy]) -> RoleProgram:
    """The role program of ``method``, whose server follows ``strategy(config)``.

    Everything runs on the CPU whatever ``device`` says (the emulated testbed charges the
    devices' time); every rank builds the strategy, only the server uses its state.
    """
    return RoleProgram(setup=lambda config, device: setup(config, strategy(config), method),
                       worker=make_client, coordinate=coordinate, exposed=EXPOSED)
