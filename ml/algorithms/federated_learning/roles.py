"""FedAvg: federated averaging of locally trained models.

Paper: H. B. McMahan, E. Moore, D. Ramage, S. Hampson, B. Agüera y Arcas, "Communication-Efficient
Learning of Deep Networks from Decentralized Data", AISTATS 2017 (arXiv 1602.05629), Algorithm 1.

Steps, per round t = 1..T:
1. The server samples m = max(C·K, 1) of the K workers (``clients_per_round``).
2. It sends the global weights w_t to each of them.
3. Each selected worker k runs E local epochs of mini-batch SGD of size B on its n_k samples
   (ClientUpdate), starting from w_t.
4. Each worker sends its weights w_{t+1}^k back.
5. The server averages them weighted by data size: w_{t+1} = sum_k n_k w_{t+1}^k / sum_k n_k.

Ours (not in the paper): the emulated time model (ml.testbed: a round starts when the server
and the selected workers are in sync, ends when the last upload has arrived), local SGD momentum
restarting each round, BatchNorm buffers averaged with the weights, and a test-set evaluation
of w_{t+1} every ``eval_every`` rounds.

Roles (ml.distributed.runtime): the server is :func:`coordinate`, each worker an
``ml.fl.Worker`` whose ``fit`` the server calls; the same program runs emulated or distributed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ml.algorithms.federated_learning.config import FedAvgConfig
from ml.distributed.messages import wire_type
from ml.distributed.runtime import RoleProgram, Runtime, results
from ml.fl import (Federation, RoundLog, SGDSettings, TrainerPool, TrainResult, WeightedAverage,
                   Worker, build_federation, evaluate, get_weights, participants_count,
                   sample_clients, set_weights, work_per_sample)
from ml.fl.waiting import WaitingLedger, round_end_barrier
from ml.method_run import generator
from ml.models import model_bytes
from ml.reporting import Reporter


@dataclass
class FedAvgContext:
    """What every rank builds: the federation, and the rank's shared local trainers."""

    config: FedAvgConfig
    fed: Federation
    trainers: TrainerPool | None = None


def setup(config: FedAvgConfig, device) -> FedAvgContext:
    return FedAvgContext(config, build_federation(config, device))


def make_worker(context: FedAvgContext, index: int) -> Worker:
    """Virtual worker ``index``; the workers of one process share one TrainerPool."""
    fed, config = context.fed, context.config
    if context.trainers is None:
        context.trainers = TrainerPool(fed.model, SGDSettings(config.lr, config.momentum,
                                                              config.weight_decay))
    return Worker(index, fed.testbed.workers[index], fed.train, fed.stream(index),
                  context.trainers)


def coordinate(config: FedAvgConfig, context: FedAvgContext, runtime: Runtime,
               reporter: Reporter) -> dict:
    """The server's role: sample, send w_t, collect and average the workers' weights."""
    wall_start = time.perf_counter()
    fed = context.fed
    testbed, model = fed.testbed, fed.model
    server = testbed.require_server()
    devices = testbed.workers
    workers = runtime.workers
    num_samples = [len(shard) for shard in fed.shards]
    _, flops_per_sample = work_per_sample(model, fed.dataset.input_shape, fed.device)
    message_bytes = model_bytes(model, include_buffers=True)
    per_round = participants_count(config.clients_per_round, len(workers))
    sampler = generator(config.seed, "clients")
    log = RoundLog(reporter, testbed)
    global_weights = get_weights(model)
    waiting = WaitingLedger([d.name for d in devices])
    reporter.log(f"fedavg: {fed.describe()}; {per_round} workers per round")

    for step in range(1, config.rounds + 1):
        log.check_cancelled()
        selected = sample_clients(len(workers), per_round, sampler)
        round_start = testbed.barrier([server, *(devices[i] for i in selected)])
        for i in selected:
            testbed.transfer(server, devices[i], message_bytes, "model")
        fits = [workers[i].call("fit", global_weights, config.local_epochs, kind="model",
                                reply_kind="model") for i in selected]
        average = WeightedAverage()
        loss_sum = samples = 0.0
        for i, result in zip(selected, results(fits)):
            testbed.compute(devices[i], result.samples * flops_per_sample)
            testbed.transfer(devices[i], server, message_bytes, "model")
            average.add(result.weights, result.num_samples)
            loss_sum += result.loss * result.samples
            samples += result.samples
        global_weights = average.result(global_weights)
        round_end, idle = round_end_barrier(testbed, [server, *(devices[i] for i in selected)])
        waiting.add_by_device(idle)

        evaluation = None
        if step % config.eval_every == 0 or step == config.rounds:
            set_weights(model, global_weights)
            evaluation = evaluate(model, fed.test_x, fed.test_y)
        runtime.report_round(log, step, round_end - round_start, loss_sum / max(samples, 1),
                             evaluation, waiting)

    return {
        "final": log.final,
        "rounds": config.rounds,
        "participants_per_round": per_round,
        "model_bytes": message_bytes,
        "training_flops_per_sample": flops_per_sample,
        "sim_time_s": testbed.now(),
        "wall_time_s": time.perf_counter() - wall_start,
        "workers": [{"name": d.name, "profile": d.profile.name, "samples": n}
                    for d, n in zip(devices, num_samples)],
        "server": server.name,
    }


wire_type(TrainResult)  # what Worker.fit returns crosses the wire as JSON + tensors
PROGRAM = RoleProgram(setup=setup, worker=make_worker, coordinate=coordinate,
                      exposed=frozenset({"fit"}), threads=lambda config: config.client_threads)
