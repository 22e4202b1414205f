"""The federated round loop shared by FedSpine and its baselines; a strategy fills the gaps.

Per round (every client takes part, ours):
1. the strategy plans each client's (rank, target sparsity) — S-UCB for FedSpine;
2. the server sends each client its slice of the global adapters and the classification head;
3. clients run :func:`.client.local_round`; their devices' clocks advance by the FLOPs spent;
4. clients upload adapters and head; the server aggregates the adapters with the strategy's
   aggregator and averages the head by sample count (FedAvg);
5. the strategy gets the feedback (bandit rewards, HetLoRA rank self-pruning);
6. evaluation: each client's *deployed* model (its pruned base with the global adapters merged
   in, sliced to its structure) on the held-out windows; accuracy and loss are the mean over
   clients.

Emulated time: the round ends when the last upload has arrived (ml.testbed barrier).
"""
from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import torch

from ml.algorithms.fedspine.adapters import LoRAState, scatter_state, slice_state
from ml.algorithms.fedspine.client import Client, LocalResult, Plan, Workspace, local_round
from ml.algorithms.fedspine.config import LoRAFedConfig
from ml.algorithms.fedspine.importance import ImportanceTracker
from ml.algorithms.fedspine.measure import (deployed_params, host_latency_ms, merged,
                                            state_bytes, training_memory_bytes)
from ml.algorithms.fedspine.structure import Structure, sparsity
from ml.algorithms.fedspine.task import TopicData, load_base, load_topic_data
from ml.data.partition import partition
from ml.fl.batches import BatchStream
from ml.fl.reporting import RoundLog
from ml.method_run import generator, seeded_run, torch_device
from ml.models.flops import count_flops
from ml.models.lora import lora_state_dict
from ml.reporting import Reporter
from ml.testbed.emulator import Testbed
from ml.testbed.presets import resolve_testbed

PROBE_SAMPLES = 64


class Strategy(Protocol):
    """What differs between FedSpine and the baselines."""

    max_rank: int
    prune_every: int

    def setup(self, ctx: "Run") -> None: ...

    def plans(self, ctx: "Run", step: int) -> list[Plan]: ...

    def aggregator(self, like: LoRAState): ...

    def weight(self, client: Client, result: LocalResult) -> float: ...

    def feedback(self, ctx: "Run", step: int, plans: list[Plan], results: list[LocalResult],
                 times: list[float]) -> dict[str, float]: ...


class Run:
    """One federated fine-tuning run: data, base, clients, global adapters and head."""

    def __init__(self, config: LoRAFedConfig, strategy: Strategy, reporter: Reporter,
                 data: TopicData | None = None):
        self.config, self.strategy, self.reporter = config, strategy, reporter
        self.base, self.base_info = load_base(config.base)
        self.data = data or load_topic_data(seq_len=self.base.cfg.max_seq_len, seed=0,
                                            max_test=config.test_samples, task=config.dataset)
        self.testbed: Testbed = resolve_testbed(config.testbed, config.workers)
        self.server = self.testbed.require_server()
        self.ws = Workspace(self.base, self.data.train_x, self.data.train_y, config.lr,
                            config.lora_scaling, strategy.prune_every, config.local_steps)
        self.classifier = torch.nn.Linear(self.base.cfg.d_model, self.data.num_classes)
        full = Structure.full(self.base)
        template = self.ws.model(self.classifier, full, strategy.max_rank, None)
        self.global_lora: LoRAState = lora_state_dict(template)  # A random, B zero: ΔW = 0
        parts = partition(self.data.train_y.numpy(), config.workers, config.partition,
                          seed=config.seed, alpha=config.partition_alpha,
                          min_size=PROBE_SAMPLES, num_classes=self.data.num_classes)
        self.partition = parts
        cfg = self.base.cfg
        self.clients: list[Client] = []
        for i, (dev, idx) in enumerate(zip(self.testbed.workers, parts.indices)):
            shard = torch.from_numpy(idx)
            probe = shard[torch.randperm(len(shard), generator=generator(config.seed, "probe", i))
                          [:PROBE_SAMPLES]]
            self.clients.append(Client(
                index=i, device=dev,
                stream=BatchStream(shard, config.batch_size, generator(config.seed, "shuffle", i)),
                probe_x=self.data.train_x[probe], probe_y=self.data.train_y[probe],
                structure=full, tracker=ImportanceTracker(cfg.n_layers, cfg.n_heads, cfg.d_ff,
                                                          getattr(config, "importance_ema", 0.9))))
        strategy.setup(self)

    # -- one round ---------------------------------------------------------------------------

    def round(self, step: int, log: RoundLog) -> None:
        tb, server = self.testbed, self.server
        plans = self.strategy.plans(self, step)
        start = tb.barrier([server, *(c.device for c in self.clients)])
        aggregator = self.strategy.aggregator(self.global_lora)
        head_sum = {k: torch.zeros_like(v) for k, v in self.classifier.state_dict().items()}
        head_weight = 0.0
        results, times = [], []
        head_bytes = state_bytes(self.classifier.state_dict())
        for client, plan in zip(self.clients, plans):
            down = slice_state(self.global_lora, client.structure, plan.rank, self.ws.head_dim)
            tb.transfer(server, client.device, state_bytes(down) + head_bytes, "lora")
            result = local_round(self.ws, client, self.global_lora, self.classifier, plan)
            tb.compute(client.device, result.flops)
            arrival = tb.send(client.device, server, state_bytes(result.state) + head_bytes, "lora")
            tb.receive(server, arrival)
            times.append(arrival - start)
            full, masks = scatter_state(result.state, result.structure, result.rank,
                                        self.ws.head_dim, self.global_lora)
            aggregator.add(full, masks, self.strategy.weight(client, result))
            for k, v in result.classifier.items():
                head_sum[k] += client.num_samples * v
            head_weight += client.num_samples
            results.append(result)
        end = tb.barrier([server, *(c.device for c in self.clients)])
        self.global_lora = aggregator.result(self.global_lora)
        self.classifier.load_state_dict({k: v / head_weight for k, v in head_sum.items()})
        extra = self.strategy.feedback(self, step, plans, results, times)

        log.metric("round_time_s", step, end - start)
        log.metric("sim_time_s", step, tb.now())
        log.metric("traffic_bytes", step, tb.traffic.total())
        log.metric("train_loss", step, float(np.average([r.train_loss for r in results],
                                                        weights=[r.samples for r in results])))
        log.metric("sparsity", step, float(np.mean([r.sparsity_after for r in results])))
        for client, plan, result, t in zip(self.clients, plans, results, times):
            log.metric(f"sparsity/{client.name}", step, result.sparsity_after)
            log.metric(f"rank/{client.name}", step, plan.rank)
            log.metric(f"ratio/{client.name}", step, plan.ratio)
            log.metric(f"completion_time_s/{client.name}", step, t)
        for name, value in extra.items():
            log.metric(name, step, value)
        if step % self.config.eval_every == 0 or step == self.config.rounds:
            self.evaluate(step, log, plans)

    # -- evaluation --------------------------------------------------------------------------

    def deployed(self, structure: Structure):
        """A client's deployed model: pruned base, global adapters (all ranks) merged in."""
        R = self.strategy.max_rank
        model = self.ws.model(self.classifier, structure, R,
                              slice_state(self.global_lora, structure, R, self.ws.head_dim))
        return model

    @torch.no_grad()
    def _accuracy(self, model) -> tuple[float, float]:
        model.eval()
        logits = torch.cat([model(x) for x in self.data.test_x.split(256)])
        loss = torch.nn.functional.cross_entropy(logits, self.data.test_y).item()
        return float((logits.argmax(1) == self.data.test_y).float().mean()), loss

    def evaluate(self, step: int, log: RoundLog, plans: list[Plan]) -> None:
        cache: dict[Structure, dict] = {}
        accs, losses, lat, params, flops = [], [], [], [], []
        x1 = self.data.test_x[:1]
        for client, plan in zip(self.clients, plans):
            s = client.structure
            if s not in cache:
                model = self.deployed(s)
                mem = training_memory_bytes(self.ws.model(self.classifier, s, plan.rank, None),
                                            self.data.train_x[:self.config.batch_size],
                                            self.data.train_y[:self.config.batch_size])
                model = merged(model)
                acc, loss = self._accuracy(model)
                cache[s] = {"acc": acc, "loss": loss, "flops": count_flops(model, x1),
                            "params": deployed_params(model), "mem": mem}
            info = cache[s]
            latency = 1e3 * Testbed.compute_time(client.device, info["flops"])
            accs.append(info["acc"]); losses.append(info["loss"]); lat.append(latency)
            params.append(info["params"]); flops.append(info["flops"])
            log.metric(f"memory_bytes/{client.name}", step, info["mem"])
            log.metric(f"inference_latency_ms/{client.name}", step, latency)
        log.metric("accuracy", step, float(np.mean(accs)))
        log.metric("loss", step, float(np.mean(losses)))
        log.metric("inference_latency_ms", step, float(np.mean(lat)))
        log.metric("params", step, float(np.mean(params)))
        log.metric("flops", step, float(np.mean(flops)))
        log.metric("memory_bytes", step, float(max(c["mem"] for c in cache.values())))

    def final_latency_ms(self) -> float:
        """Host wall time of one forward pass (batch 1) of the deployed models, mean."""
        times = [host_latency_ms(merged(self.deployed(s)), self.data.test_x[:1])
                 for s in {c.structure for c in self.clients}]
        return float(np.mean(times))


def run_method(name: str, config: LoRAFedConfig, strategy: Strategy, reporter: Reporter,
               data: TopicData | None = None) -> dict:
    """Set up and train; return the JSON-able summary."""
    wall = time.perf_counter()
    device = torch_device(config.device)
    if device.type != "cpu":
        reporter.log(f"{name}: runs on CPU (the emulated testbed charges the device's time)")
    with seeded_run(config.seed, torch.device("cpu")):
        run = Run(config, strategy, reporter, data)
        log = RoundLog(reporter, run.testbed)
        reporter.log(f"{name}: {len(run.clients)} clients on {run.testbed.describe()[0]['profile']}"
                     f"..., base {config.base} (val perplexity "
                     f"{run.base_info['val_perplexity']:.2f}), {len(run.data.train_y)} training "
                     f"windows, {len(run.data.test_y)} test")
        for step in range(1, config.rounds + 1):
            log.check_cancelled()
            run.round(step, log)
        latency = run.final_latency_ms()
        log.final["inference_wall_ms"] = latency
        return {
            "final": log.final,
            "rounds": config.rounds,
            "sim_time_s": run.testbed.now(),
            "wall_time_s": time.perf_counter() - wall,
            "base": {"name": config.base, "params": run.base.num_parameters(),
                     "val_perplexity": run.base_info["val_perplexity"],
                     "unigram_perplexity": run.base_info["unigram_perplexity"]},
            "clients": [{"name": c.name, "device": c.device.name, "profile": c.device.profile.name,
                         "samples": c.num_samples,
                         "sparsity": sparsity(run.base, c.structure),
                         "heads": [list(h) for h in c.structure.heads],
                         "channels_kept": [len(ch) for ch in c.structure.channels]}
                        for c in run.clients],
        }
