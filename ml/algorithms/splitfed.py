"""SplitFed (SFL-V2): split learning with a shared server-side model and federated bottoms.

Paper: C. Thapa, P. C. Mahawaga Arachchige, S. Camtepe, L. Sun, "SplitFed: When Federated
Learning Meets Split Learning", AAAI 2022 (arXiv 2004.12088), SFL-V2.

The model is cut into a bottom (on every worker) and a top (on the main server). Steps, per
round:
1. The fed server sends the global bottom weights to every worker.
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
order (ties by worker index), finishing one iteration's batches before the next's; the
``features`` traffic counts the labels sent with them (8 bytes each); worker momentum restarts
each round; the test-set evaluation of the combined model every ``eval_every`` rounds.
"""
from __future__ import annotations

import copy
import math
import time

import torch
from pydantic import Field

from ml.config import ConfigError
from ml.fl import (Federation, RoundLog, SGDSettings, SplitServer, SplitWorker, WeightedAverage,
                   build_federation, evaluate, get_weights, seeded_run, set_weights, torch_device,
                   work_per_sample)
from ml.fl.config import FederatedConfig
from ml.fl.waiting import WaitingLedger, round_end_barrier
from ml.models import model_bytes
from ml.registry import Method, register
from ml.reporting import Reporter

LABEL_BYTES = 8  # int64 class ids


class SplitFedConfig(FederatedConfig):
    """SplitFed's knobs on top of the shared federated ones."""

    local_iterations: int = Field(default=10, ge=1, le=100_000,
                                  description="Iterations between bottom-model averaging (K)")
    split_point: str | None = Field(default=None,
                                    description="Stage after which the model is cut (default: "
                                                "the model's own, e.g. conv2 for cnn)")


def run(config: SplitFedConfig, reporter: Reporter) -> dict:
    """Train with SFL-V2 on the emulated testbed; report per-round metrics; return the summary."""
    device = torch_device(config.device)
    with seeded_run(config.seed, device):
        fed = build_federation(config, device)
        return _train(config, fed, reporter)


def _train(config: SplitFedConfig, fed: Federation, reporter: Reporter) -> dict:
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
    waiting = WaitingLedger([w.device.name for w in workers])
    reporter.log(f"splitfed: {fed.describe()}; cut after {split_point}, features "
                 f"{list(feature_shape)} per sample")

    for step in range(1, config.rounds + 1):
        log.check_cancelled()
        everyone = [server_device, *(w.device for w in workers)]
        round_start = testbed.barrier(everyone)
        for worker in workers:
            testbed.transfer(server_device, worker.device, bottom_bytes, "model")
            worker.set_weights(global_bottom)

        loss_sum = torch.zeros((), dtype=torch.float64, device=fed.device)
        samples = 0
        for _ in range(config.local_iterations):
            batches = [worker.next_batch() for worker in workers]
            arrivals = []
            for worker, (x, _) in zip(workers, batches):
                testbed.compute(worker.device, len(x) * bottom_forward)
                arrivals.append(testbed.send(worker.device, server_device,
                                             len(x) * (feature_bytes + LABEL_BYTES), "features"))
            for i in sorted(range(len(workers)), key=lambda i: (arrivals[i], i)):
                worker, (x, y) = workers[i], batches[i]
                loss, grad = server.train_step(worker.forward(x), y)
                worker.backward(grad)
                loss_sum += loss.double() * len(x)
                samples += len(x)
                testbed.receive(server_device, arrivals[i])
                testbed.compute(server_device, len(x) * top_train)
                back = testbed.send(server_device, worker.device, len(x) * feature_bytes,
                                    "gradients")
                testbed.receive(worker.device, back)
                testbed.compute(worker.device, len(x) * bottom_backward)

        average = WeightedAverage()
        for worker in workers:
            testbed.transfer(worker.device, server_device, bottom_bytes, "model")
            average.add(worker.get_weights(), worker.num_samples)
        global_bottom = average.result(global_bottom)
        round_end, idle = round_end_barrier(testbed, everyone)
        waiting.add_by_device(idle)

        evaluation = None
        if step % config.eval_every == 0 or step == config.rounds:
            set_weights(bottom, global_bottom)
            evaluation = evaluate(model, fed.test_x, fed.test_y)
        log.round(step, round_end - round_start, loss_sum.item() / max(samples, 1), evaluation)
        waiting.report(log, step)

    return {
        "final": log.final,
        "rounds": config.rounds,
        "split_point": split_point,
        "feature_shape": list(feature_shape),
        "bottom_model_bytes": bottom_bytes,
        "sim_time_s": testbed.now(),
        "wall_time_s": time.perf_counter() - wall_start,
        "workers": [{"name": w.name, "profile": w.device.profile.name, "samples": w.num_samples}
                    for w in workers],
        "server": server_device.name,
    }


METHOD = register(Method(
    name="splitfed",
    paper="Thapa et al., SplitFed: When Federated Learning Meets Split Learning, AAAI 2022 "
          "(arXiv 2004.12088)",
    summary="SFL-V2: workers train the bottom of a split model, the server trains the top on "
            "their features one worker after another; bottoms are averaged every K iterations.",
    config=SplitFedConfig,
    run=run,
    baselines=("fedavg",),
    metrics=("accuracy", "loss", "train_loss", "traffic_bytes", "traffic_bytes/features",
             "traffic_bytes/gradients", "traffic_bytes/model", "round_time_s", "sim_time_s",
             "waiting_time_s"),
    family="split-learning",
))
