"""The server's evaluation: each client's deployed model on the held-out windows, and what it
costs on the client's device (memory to train, FLOPs, emulated latency, parameters).

A client's *deployed* model is its pruned base with the global adapters (every rank) merged in
and the global head; accuracy and loss are the mean over clients.
"""
from __future__ import annotations

import numpy as np
import torch

from ml.algorithms.federated_fine_tuning.adapters import LoRAState, slice_state
from ml.algorithms.federated_fine_tuning.measure import (deployed_params, host_latency_ms,
                                                         merged, training_memory_bytes)
from ml.algorithms.federated_fine_tuning.strategies import ClientView
from ml.algorithms.federated_fine_tuning.structure import Structure
from ml.algorithms.federated_fine_tuning.task import TopicClassifier, TopicData
from ml.algorithms.federated_fine_tuning.training import Head, Plan, Workspace
from ml.fl.reporting import RoundLog
from ml.models.flops import count_flops
from ml.testbed.emulator import Testbed


class Evaluator:
    """Evaluates global adapters and head on every client's structure."""

    def __init__(self, ws: Workspace, data: TopicData, max_rank: int, batch_size: int):
        self.ws = ws
        self.data = data
        self.max_rank = max_rank
        self.batch_size = batch_size

    def deployed(self, head: Head, adapters: LoRAState, structure: Structure) -> TopicClassifier:
        """A client's deployed model: pruned base, global adapters (all ranks), global head."""
        R = self.max_rank
        return self.ws.model(head, structure, R,
                             slice_state(adapters, structure, R, self.ws.head_dim))

    @torch.no_grad()
    def _accuracy(self, model: TopicClassifier) -> tuple[float, float]:
        model.eval()
        logits = torch.cat([model(x) for x in self.data.test_x.split(256)])
        loss = torch.nn.functional.cross_entropy(logits, self.data.test_y).item()
        return float((logits.argmax(1) == self.data.test_y).float().mean()), loss

    def evaluate(self, step: int, log: RoundLog, clients: list[ClientView], head: Head,
                 adapters: LoRAState, plans: list[Plan]) -> tuple[float, float]:
        """Report the cost metrics per client; return the mean (accuracy, loss)."""
        cache: dict[Structure, dict] = {}
        accs, losses, lat, params, flops = [], [], [], [], []
        x1 = self.data.test_x[:1]
        for client, plan in zip(clients, plans):
            s = client.structure
            if s not in cache:
                model = self.deployed(head, adapters, s)
                mem = training_memory_bytes(self.ws.model(head, s, plan.rank, None),
                                            self.data.train_x[:self.batch_size],
                                            self.data.train_y[:self.batch_size])
                model = merged(model)
                acc, loss = self._accuracy(model)
                cache[s] = {"acc": acc, "loss": loss, "flops": count_flops(model, x1),
                            "params": deployed_params(model), "mem": mem}
            info = cache[s]
            latency = 1e3 * Testbed.compute_time(client.device, info["flops"])
            accs.append(info["acc"])
            losses.append(info["loss"])
            lat.append(latency)
            params.append(info["params"])
            flops.append(info["flops"])
            log.metric(f"memory_bytes/{client.name}", step, info["mem"])
            log.metric(f"inference_latency_ms/{client.name}", step, latency)
        log.metric("inference_latency_ms", step, float(np.mean(lat)))
        log.metric("params", step, float(np.mean(params)))
        log.metric("flops", step, float(np.mean(flops)))
        log.metric("memory_bytes", step, float(max(c["mem"] for c in cache.values())))
        return float(np.mean(accs)), float(np.mean(losses))

    def final_latency_ms(self, clients: list[ClientView], head: Head,
                         adapters: LoRAState) -> float:
        """Host wall time of one forward pass (batch 1) of the deployed models, mean."""
        times = [host_latency_ms(merged(self.deployed(head, adapters, s)), self.data.test_x[:1])
                 for s in {c.structure for c in clients}]
        return float(np.mean(times))
