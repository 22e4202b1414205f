"""The round loop shared by AdaSFL and MergeSFL: split FL with per-worker batch sizes.

Per round: a planner picks the participants and their batch sizes (AdaSFL: everyone, regulated;
MergeSFL: a genetic selection, regulated); the server sends them the global bottom; K iterations
run, merged (MergeSFL) or sequential (SFL-V2, AdaSFL); each participant uploads its bottom and the
server averages them weighted by batch size (papers.md §6 step 5, [I]); the combined model is
evaluated. Everything runs against the emulated testbed's clocks.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ml.algorithms.split_control import IterationCost, kl_to_uniform, label_distribution
from ml.algorithms.split_training import (SampleStream, SplitCosts, TopLRScaling, draw_batches,
                                          merged_iteration, sequential_iteration,
                                          set_learning_rate, top_lr_factor)
from ml.fl.waiting import WaitingLedger, round_end_barrier
from ml.config import ConfigError
from ml.fl import (Federation, RoundLog, SGDSettings, SplitServer, SplitWorker, WeightedAverage,
                   evaluate, get_weights, set_weights)
from ml.method_run import generator
from ml.reporting import Reporter

if TYPE_CHECKING:
    from ml.algorithms.adasfl import AdaSFLConfig


@dataclass(frozen=True)
class RoundPlan:
    """Who trains this round and with which batch sizes (aligned arrays)."""

    members: np.ndarray
    batch_sizes: np.ndarray


@dataclass(frozen=True)
class PlanningInputs:
    """What the server knows when it plans a round (papers.md: worker state monitoring)."""

    distributions: np.ndarray  # label distribution per worker
    cost: IterationCost  # every worker's iteration time model against the server
    num_workers: int


Planner = Callable[[int, PlanningInputs], RoundPlan]


def train_regulated_sfl(config: "AdaSFLConfig", fed: Federation, reporter: Reporter, *,
                        merging: bool, planner: Planner, top_lr_scaling: TopLRScaling = "none",
                        top_lr_warmup_rounds: int = 0) -> dict:
    """Run ``config.rounds`` rounds; return the method's summary (``final`` metrics and more).

    With ``merging``, the top model's learning rate in a round is ``config.lr`` times
    :func:`top_lr_factor` of the merged batch against ``config.batch_size`` under
    ``top_lr_scaling``, ramped up over the first ``top_lr_warmup_rounds`` rounds.
    """
    wall_start = time.perf_counter()
    testbed, model = fed.testbed, fed.model
    server_device = testbed.require_server()
    try:
        bottom, top = model.split(config.split_point)
    except ValueError as exc:
        raise ConfigError({"split_point": str(exc)}) from None
    sgd = SGDSettings(config.lr, config.momentum, config.weight_decay)
    server = SplitServer(top, sgd)
    workers = [SplitWorker(i, dev, fed.train, fed.stream(i), copy.deepcopy(bottom), sgd)
               for i, dev in enumerate(testbed.workers)]
    streams = [SampleStream(fed.shards[i], generator(config.seed, "shuffle", i))
               for i in range(len(workers))]
    costs = SplitCosts.measure(bottom, top, fed.dataset.input_shape, fed.device)
    inputs = PlanningInputs(fed.partition.label_distributions(),
                            costs.iteration_cost(testbed, testbed.workers, server_device),
                            len(workers))
    num_classes = fed.dataset.num_classes
    iterate = merged_iteration if merging else sequential_iteration
    log = RoundLog(reporter, testbed)
    waiting = WaitingLedger([w.name for w in workers])
    global_bottom = get_weights(bottom)
    plan = None

    for step in range(1, config.rounds + 1):
        log.check_cancelled()
        plan = planner(step, inputs)
        group = [workers[i] for i in plan.members]
        devices = [server_device, *(w.device for w in group)]
        round_start = testbed.barrier(devices)
        if merging:
            progress = step / top_lr_warmup_rounds if top_lr_warmup_rounds else 1.0
            top_lr = config.lr * top_lr_factor(top_lr_scaling, int(plan.batch_sizes.sum()),
                                               config.batch_size, progress)
            set_learning_rate(server.optimizer, top_lr)
        for worker in group:
            testbed.transfer(server_device, worker.device, costs.bottom_bytes, "model")
            worker.set_weights(global_bottom)

        loss_sum, samples, batch_kl = 0.0, 0, []
        for _ in range(config.local_iterations):
            batches = draw_batches(streams, fed.train, plan.members, plan.batch_sizes)
            result = iterate(testbed, server_device, server, group, batches, costs, num_classes)
            loss_sum += result.loss_sum
            samples += result.samples
            waiting.add(result.waiting_s)
            batch_kl.append(_seen_label_kl(result.label_counts, merging))

        average = WeightedAverage()
        for worker, b in zip(group, plan.batch_sizes):
            testbed.transfer(worker.device, server_device, costs.bottom_bytes, "model")
            average.add(worker.get_weights(), float(b))
        global_bottom = average.result(global_bottom)
        round_end, idle = round_end_barrier(testbed, devices)
        waiting.add_by_device(idle)

        evaluation = None
        if step % config.eval_every == 0 or step == config.rounds:
            set_weights(bottom, global_bottom)
            evaluation = evaluate(model, fed.test_x, fed.test_y)
        log.round(step, round_end - round_start, loss_sum / max(samples, 1), evaluation)
        log.metric("batch_label_kl", step, float(np.mean(batch_kl)))
        log.metric("participants", step, len(group))
        if merging:
            log.metric("top_lr", step, server.optimizer.param_groups[0]["lr"])
        waiting.report(log, step)

    return {
        "final": log.final,
        "rounds": config.rounds,
        "split_point": config.split_point or model.default_split,
        "feature_shape": list(costs.feature_shape),
        "bottom_model_bytes": costs.bottom_bytes,
        "last_plan": {"members": [workers[i].name for i in plan.members],
                      "batch_sizes": [int(b) for b in plan.batch_sizes]},
        "sim_time_s": testbed.now(),
        "wall_time_s": time.perf_counter() - wall_start,
        "workers": [{"name": w.name, "profile": w.device.profile.name, "samples": w.num_samples}
                    for w in workers],
        "server": server_device.name,
    }


def _seen_label_kl(label_counts: dict[int, torch.Tensor], merged: bool) -> float:
    """KL to uniform of the label mix each top-model step saw: the merged batch when merging,
    else the mean over the workers' separate batches."""
    counts = [c.double().numpy() for c in label_counts.values()]
    if merged:
        return kl_to_uniform(label_distribution(np.sum(counts, axis=0)))
    return float(np.mean([kl_to_uniform(label_distribution(c)) for c in counts]))
