"""SplitFed (SFL-V2), the server's role: split learning with a shared server-side model and
federated bottoms.

Paper: C. Thapa, P. C. Mahawaga Arachchige, S. Camtepe, L. Sun, "SplitFed: When Federated
Learning Meets Split Learning", AAAI 2022 (arXiv 2004.12088), SFL-V2.

The model is cut into a bottom (on every worker) and a top (on the main server). Steps, per
round:
0. The fed server draws the round's participants uniformly at random (``clients_per_round``;
   all workers by default, as in the paper's experiments; the others sit the round out).
1. The fed server sends the global bottom weights to every participant.
2. For each of K = ``local_iterations`` iterations:
   a. every worker runs its bottom on its next mini-batch and sends the features (smashed data)
      and labels to the main server, all in parallel;
   b. the main server takes the workers' batches one after another (SFL-V2), and for each runs
      the top forward and backward, steps the top model, and sends the feature gradients back;
   c. each worker back-propagates its gradients through its bottom and steps it.
3. Every worker sends its bottom weights to the fed server, which averages them weighted by
   data size (FedAvg) into the next global bottom.

Ours (not fixed by the paper): the fed server and the main server are one device (the testbed's
server); the main server serves a batch as soon as it has arrived and it is free, in arrival
order (ties by worker index), finishing one iteration's batches before the next's — the arrival
order of the emulated clock, in distributed runs too, so both runtimes train identically; the
``features`` traffic counts the labels sent with them (8 bytes each); worker momentum restarts
each round; the test-set evaluation of the combined model every ``eval_every`` rounds.
"""
from __future__ import annotations

import math

import torch

from ml.algorithms.split_learning.config import SplitFedConfig
from ml.algorithms.split_learning.context import SplitContext
from ml.algorithms.split_learning.sampling import BatchSizes
from ml.algorithms.split_learning.training import LABEL_BYTES
from ml.algorithms.split_learning.workers import SplitServer
from ml.distributed.runtime import Runtime, results
from ml.fl import (RoundLog, SGDSettings, WeightedAverage, evaluate, get_weights, set_weights,
                   work_per_sample)
from ml.fl.sampling import participants_count, sample_clients
from ml.fl.waiting import WaitingLedger, round_end_barrier
from ml.method_run import MethodRun, generator
from ml.models import model_bytes
from ml.reporting import Reporter


def coordinate(config: SplitFedConfig, context: SplitContext, runtime: Runtime,
               reporter: Reporter) -> dict:
    """The fed server's and main server's role (one device): bottoms out and back, the top
    trained on the workers' features in their (emulated) arrival order."""
    run = MethodRun(reporter, context.fed.device)
    fed, bottom, top = context.fed, context.bottom, context.top
    testbed, model = fed.testbed, fed.model
    server_device = testbed.require_server()
    sgd = SGDSettings(config.lr, config.momentum, config.weight_decay)
    server = SplitServer(top, sgd)
    all_devices = testbed.workers
    all_workers = runtime.workers
    per_round = participants_count(config.clients_per_round, len(all_workers))
    sampler = generator(config.seed, "clients")
    num_samples = [len(shard) for shard in fed.shards]
    sizes = [BatchSizes(n, config.batch_size) for n in num_samples]

    input_shape = fed.dataset.input_shape
    probe = torch.zeros((1, *input_shape), device=fed.device)
    with torch.no_grad():
        feature_shape = tuple(bottom(probe).shape[1:])
    feature_bytes = 4 * math.prod(feature_shape)  # per sample, fp32
    bottom_forward, bottom_train = work_per_sample(bottom, input_shape, fed.device)
    bottom_backward = bottom_train - bottom_forward
    _, top_train = work_per_sample(top, feature_shape, fed.device)
    bottom_bytes = model_bytes(bottom, include_buffers=True)
    log = RoundLog(reporter, testbed)
    global_bottom = get_weights(bottom)
    split_point = config.split_point or model.default_split
    waiting = WaitingLedger([d.name for d in all_devices])
    reporter.log(f"splitfed: {fed.describe()}; cut after {split_point}, features "
                 f"{list(feature_shape)} per sample; {per_round} workers per round")

    for step in range(1, config.rounds + 1):
        log.check_cancelled()
        # With every worker taking part the sampler is not drawn from (runs unchanged).
        selected = sample_clients(len(all_workers), per_round, sampler)
        devices = [all_devices[i] for i in selected]
        workers = [all_workers[i] for i in selected]
        everyone = [server_device, *devices]
        round_start = testbed.barrier(everyone)
        for worker, device in zip(workers, devices):
            testbed.transfer(server_device, device, bottom_bytes, "model")
            worker.cast("set_weights", global_bottom, kind="model")

        loss_sum = torch.zeros((), dtype=torch.float64, device=fed.device)
        samples = 0
        for _ in range(config.local_iterations):
            batch = [sizes[i].next() for i in selected]
            arrivals = []
            for device, n in zip(devices, batch):
                testbed.compute(device, n * bottom_forward)
                arrivals.append(testbed.send(device, server_device,
                                             n * (feature_bytes + LABEL_BYTES), "features"))
            # The server takes batches in their emulated arrival order, in both runtimes.
            order = sorted(range(len(workers)), key=lambda i: (arrivals[i], i))
            forwards = {i: workers[i].call("forward_next", reply_kind="features")
                        for i in order}
            for i in order:
                features, y = forwards[i].result()
                if len(y) != batch[i]:
                    raise RuntimeError(f"worker {i} sent a batch of {len(y)}, expected "
                                       f"{batch[i]}")
                loss, grad = server.train_step(features, y)
                workers[i].cast("backward", grad, kind="gradients")
                loss_sum += loss.double() * len(y)
                samples += len(y)
                device = devices[i]
                testbed.receive(server_device, arrivals[i])
                testbed.compute(server_device, len(y) * top_train)
                back = testbed.send(server_device, device, len(y) * feature_bytes,
                                    "gradients")
                testbed.receive(device, back)
                testbed.compute(device, len(y) * bottom_backward)

        average = WeightedAverage()
        bottoms = [w.call("get_weights", reply_kind="model") for w in workers]
        for device, n, weights in zip(devices, (num_samples[i] for i in selected),
                                      results(bottoms)):
            testbed.transfer(device, server_device, bottom_bytes, "model")
            average.add(weights, n)
        global_bottom = average.result(global_bottom)
        round_end, idle = round_end_barrier(testbed, everyone)
        waiting.add_by_device(idle)

        evaluation = None
        if step % config.eval_every == 0 or step == config.rounds:
            set_weights(bottom, global_bottom)
            evaluation = evaluate(model, fed.test_x, fed.test_y)
        runtime.report_round(log, step, round_end - round_start,
                             loss_sum.item() / max(samples, 1), evaluation, waiting)

    return run.summary(
        log.final,
        rounds=config.rounds,
        split_point=split_point,
        feature_shape=list(feature_shape),
        bottom_model_bytes=bottom_bytes,
        sim_time_s=testbed.now(),
        participants_per_round=per_round,
        workers=[{"name": d.name, "profile": d.profile.name, "samples": n}
                 for d, n in zip(all_devices, num_samples)],
        server=server_device.name,
    )
