"""The round loop of AdaSFL and MergeSFL: split FL with per-worker batch sizes, one loop whose
variants are policies (:class:`RegulatedPolicy`).

Per round: the policy's planner picks the participants and their batch sizes (AdaSFL: everyone,
regulated; MergeSFL: a genetic selection, regulated); the server sends them the global bottom;
K iterations run, merged (MergeSFL) or sequential (SFL-V2, AdaSFL); each participant uploads its
bottom and the server averages them weighted by batch size (arXiv 2311.13348 step 5, [I]); the
combined model is evaluated. The coordinator (the server) charges the emulated testbed's clocks
in both runtimes; the workers are reached through the runtime (:mod:`ml.distributed.runtime`).

AdaSFL: split federated learning with batch-size regulation (the baseline of MergeSFL).

Paper: Y. Liao et al., AdaSFL, IEEE/ACM Transactions on Networking 2023; code by the first author
``ymliao98/AdaSFL`` (docs/methods/mergesfl.md). Only the code could be read; the steps below
follow it.

Steps, per round (K = ``local_iterations`` iterations):
1. The server measures each worker's per-iteration time and regulates the batch sizes so that
   fast workers take larger batches and every worker finishes an iteration at the same time
   (code: ``update_B``, ``b_i = (t_min / t_i) * B``).
2. It sends the global bottom model to every worker.
3. Each iteration: every worker runs its bottom on a batch of its own size b_i and sends the
   features and labels; the server trains the top on each worker's features (here one after
   another, as SFL-V2 / :mod:`.splitfed`) and returns the feature gradients; the
   workers back-propagate and step.
4. After K iterations the server averages the bottoms with weights ``b_i / sum_j b_j``
   (code: ``average_weight``).

Ours: the regulation is the bounded water-filling of
:func:`.planning.regulate_batch_sizes` (the total batch ``batch_size x
workers`` is fixed and every b_i stays within ``[min_batch_size, max_batch_size]``), computed
from the device profiles (compute, bandwidth, latency) instead of measured times; the per-worker
top-model copies of the authors' code, averaged every iteration, are replaced by SFL-V2's shared
top updated per worker, so that AdaSFL differs from MergeSFL exactly by the missing feature
merging and worker selection.

MergeSFL: split federated learning with feature merging and batch-size regulation.

Paper: Y. Liao, Y. Xu, H. Xu, L. Wang, Z. Yao, C. Qiao, "MergeSFL: Split Federated Learning with
Feature Merging and Batch Size Regulation", ICDE 2024 (arXiv 2311.13348); notes in
docs/methods/mergesfl.md.

Steps, per round (K = ``local_iterations`` iterations):
1. Control module: from each worker's label distribution P_i and its compute and bandwidth, a
   genetic algorithm selects the participants and, jointly, their regulated batch sizes b_i,
   minimising KL(P_merge || uniform) + mu * (slowest participant's iteration time), where
   P_merge = sum_i b_i P_i / sum_i b_i. [I: the objective's exact form]
2. The server sends the global bottom model to the participants.
3. Each iteration (training module):
   a. every participant i runs its bottom on a batch of size b_i and sends (features, labels);
   b. the server concatenates all features into one mixed sequence (feature merging), computes
      the mean cross-entropy of the top model on it and takes ONE top-model step;
   c. it dispatches to worker i its slice of the feature gradient scaled by sum_j b_j / b_i,
      the gradient of worker i's own mean loss;
   d. every participant back-propagates and steps its bottom.
4. After K iterations the server aggregates the participants' bottoms weighted by b_i
   [I: our reading of "adaptive aggregation"].

Ours (named as such in the notes or not fixed by the paper): the batch-size formula (bounded
water-filling that equalises compute + feature upload + gradient download, total batch fixed:
:func:`.planning.regulate_batch_sizes`); the GA's encoding (fixed-size worker
subsets), operators and the unit-free time term (divided by the median worker's time on an even
share); the state the control module uses (device profiles and label histograms, known
exactly); plain SGD with momentum for both halves; the merged top step's learning rate
optionally scaled with the merged batch against ``batch_size`` (``top_lr_scaling``; default
``none``, the rate of the authors' code ymliao98/MergeSFL: the server steps at the workers' lr).

Ablations (config): ``feature_merging=false`` trains the top on each worker's features in turn
(SFL-V2, as SplitFed and AdaSFL); ``batch_regulation=false`` gives every participant
``batch_size``; ``worker_selection`` = ``random`` draws the participants uniformly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ml.algorithms.split_learning.config import AdaSFLConfig, MergeSFLConfig, TopLRScaling
from ml.algorithms.split_learning.planning import (Planner, PlanningInputs, adasfl_planner,
                                                   kl_to_uniform, label_distribution,
                                                   mergesfl_planner)
from ml.algorithms.split_learning.context import SplitContext
from ml.algorithms.split_learning.training import (call_merged_iteration,
                                                   call_sequential_iteration, set_learning_rate,
                                                   top_lr_factor)
from ml.algorithms.split_learning.workers import SplitServer
from ml.distributed.runtime import Runtime, results
from ml.fl import RoundLog, SGDSettings, WeightedAverage, evaluate, get_weights, set_weights
from ml.fl.waiting import WaitingLedger, round_end_barrier
from ml.method_run import MethodRun
from ml.reporting import Reporter


@dataclass(frozen=True)
class RegulatedPolicy:
    """What distinguishes AdaSFL from MergeSFL in the one loop.

    ``planner``: a round's participants and batch sizes. ``merging``: one top step on the merged
    features (MergeSFL) or one per worker in arrival order (SFL-V2). With merging, the top
    model's learning rate is ``lr`` times :func:`top_lr_factor` of the merged batch against
    ``batch_size`` under ``top_lr_scaling``, ramped over ``top_lr_warmup_rounds``.
    """

    planner: Planner
    merging: bool
    top_lr_scaling: TopLRScaling = "none"
    top_lr_warmup_rounds: int = 0


def adasfl_policy(config: AdaSFLConfig) -> RegulatedPolicy:
    """Everyone, regulated batch sizes, SFL-V2's sequential top steps."""
    return RegulatedPolicy(adasfl_planner(config), merging=False)


def mergesfl_policy(config: MergeSFLConfig) -> RegulatedPolicy:
    """Selected participants, regulated batch sizes, merged features (unless ablated)."""
    return RegulatedPolicy(mergesfl_planner(config), merging=config.feature_merging,
                           top_lr_scaling=config.top_lr_scaling,
                           top_lr_warmup_rounds=config.top_lr_warmup_rounds)


def train(config: AdaSFLConfig, context: SplitContext, runtime: Runtime, reporter: Reporter,
          policy: RegulatedPolicy) -> dict:
    """The server's role: run ``config.rounds`` rounds; return the method's summary."""
    run = MethodRun(reporter, context.fed.device)
    fed, costs = context.fed, context.costs
    testbed, model = fed.testbed, fed.model
    server_device = testbed.require_server()
    server = SplitServer(context.top, SGDSettings(config.lr, config.momentum,
                                                  config.weight_decay))
    workers, devices = runtime.workers, testbed.workers
    inputs = PlanningInputs(fed.partition.label_distributions(),
                            costs.iteration_cost(testbed, devices, server_device), len(devices))
    num_classes = fed.dataset.num_classes
    iterate = call_merged_iteration if policy.merging else call_sequential_iteration
    log = RoundLog(reporter, testbed)
    waiting = WaitingLedger([d.name for d in devices])
    global_bottom = get_weights(context.bottom)
    plan = None

    for step in range(1, config.rounds + 1):
        log.check_cancelled()
        plan = policy.planner(step, inputs)
        members = [int(i) for i in plan.members]
        sizes = [int(b) for b in plan.batch_sizes]
        everyone = [server_device, *(devices[i] for i in members)]
        round_start = testbed.barrier(everyone)
        if policy.merging:
            warmup = policy.top_lr_warmup_rounds
            top_lr = config.lr * top_lr_factor(policy.top_lr_scaling, sum(sizes),
                                               config.batch_size,
                                               step / warmup if warmup else 1.0)
            set_learning_rate(server.optimizer, top_lr)
        for i in members:
            testbed.transfer(server_device, devices[i], costs.bottom_bytes, "model")
            workers[i].cast("set_weights", global_bottom, kind="model")

        loss_sum, samples, batch_kl = 0.0, 0, []
        for _ in range(config.local_iterations):
            result = iterate(workers, testbed, server_device, server, members, sizes, costs,
                             num_classes)
            loss_sum += result.loss_sum
            samples += result.samples
            waiting.add(result.waiting_s)
            batch_kl.append(_seen_label_kl(result.label_counts, policy.merging))

        average = WeightedAverage()
        bottoms = [workers[i].call("get_weights", reply_kind="model") for i in members]
        for i, b, weights in zip(members, sizes, results(bottoms)):
            testbed.transfer(devices[i], server_device, costs.bottom_bytes, "model")
            average.add(weights, float(b))
        global_bottom = average.result(global_bottom)
        round_end, idle = round_end_barrier(testbed, everyone)
        waiting.add_by_device(idle)

        evaluation = None
        if step % config.eval_every == 0 or step == config.rounds:
            set_weights(context.bottom, global_bottom)
            evaluation = evaluate(model, fed.test_x, fed.test_y)
        runtime.report_round(log, step, round_end - round_start, loss_sum / max(samples, 1),
                             evaluation, waiting)
        log.metric("batch_label_kl", step, float(np.mean(batch_kl)))
        log.metric("participants", step, len(members))
        if policy.merging:
            log.metric("top_lr", step, server.optimizer.param_groups[0]["lr"])

    return run.summary(
        log.final,
        rounds=config.rounds,
        split_point=context.split_point,
        feature_shape=list(costs.feature_shape),
        bottom_model_bytes=costs.bottom_bytes,
        last_plan={"members": [devices[i].name for i in plan.members],
                   "batch_sizes": [int(b) for b in plan.batch_sizes]},
        sim_time_s=testbed.now(),
        workers=[{"name": d.name, "profile": d.profile.name, "samples": len(shard)}
                 for d, shard in zip(devices, fed.shards)],
        server=server_device.name,
    )


def _seen_label_kl(label_counts: dict[int, torch.Tensor], merged: bool) -> float:
    """KL to uniform of the label mix each top-model step saw: the merged batch when merging,
    else the mean over the workers' separate batches."""
    counts = [c.double().numpy() for c in label_counts.values()]
    if merged:
        return kl_to_uniform(label_distribution(np.sum(counts, axis=0)))
    return float(np.mean([kl_to_uniform(label_distribution(c)) for c in counts]))
