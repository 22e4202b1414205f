"""One IMB-NAS run with one adaptation strategy (methods.py registers one method per strategy).

Duggal, Peng, Zhou, Chau, "IMB-NAS: Neural Architecture Search for Imbalanced Datasets",
arXiv 2210.00136 (2022); reproduced by Zhiwei Yao, arXiv 2406.16972 (2024). Notes:
docs/methods/imbnas.md.

The steps of one run:

1. Build the task (``data.py``): a balanced source and a disjoint long-tailed target (exp
   profile, ratio ``rho``), a balanced validation split and a balanced test set.
2. Train the weight-sharing supernet on the balanced source with the sandwich rule
   (``supernet.py``, ``adapt.train_source_supernet``). It is the reusable artefact of the
   method: trained once per (data, seed, settings) and cached in the process; its cost is
   reported apart (``source_pretrain_*``), not on the run's clock.
3. Adapt it to the target with the run's strategy (``adapt.py``): the method's name picks it.
4. Search subnets on the balanced validation split with the adapted head (``search.py``).
5. Retrain the chosen subnet with the same strategy and evaluate it on the balanced test set:
   balanced top-1 (``accuracy``) and many/medium/few-shot accuracy.

Catalogue (ours): one method per strategy, all sharing :class:`ImbNasConfig`, so an experiment
of ``imb-nas`` with its three baselines makes four runs with the same data, seed, budget and
testbed, and each dashboard curve is one strategy:

- ``imb-nas``: (d) freeze the source backbone, retrain the head with the re-weighted loss;
- ``imb-nas-full-search``: (a) supernet trained from scratch on the target;
- ``imb-nas-finetune-ce``: (b) fine-tune the whole source supernet with cross-entropy;
- ``imb-nas-finetune-rw``: (c) fine-tune the whole source supernet with the re-weighted loss.

Time (ours): the run executes on one emulated device, the testbed's server (its first cloud
device) or, without one, its first worker. Training and search FLOPs advance that device's clock
(``sim_time_s``); monitoring evaluations on the test set (``supernet_accuracy``, ``accuracy``
per retraining epoch) are not charged.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ml.algorithms.neural_architecture_search.adapt import (Optim, Strategy, adapt_supernet,
                                                            loss_weights_for, prepare_supernet,
                                                            retrain_subnet, steps_per_epoch,
                                                            train_source_supernet)
from ml.algorithms.neural_architecture_search.config import CALIBRATION_SIZE, ImbNasConfig
from ml.algorithms.neural_architecture_search.data import ImbalancedTask, build_task
from ml.algorithms.neural_architecture_search.evaluate import (accuracy_report, balanced_accuracy,
                                                               per_class_accuracy)
from ml.algorithms.neural_architecture_search.search import search
from ml.algorithms.neural_architecture_search.supernet import SearchSpace, SuperNet
from ml.method_run import MethodRun, check_cancelled, derive_seed, method_run
from ml.reporting import Reporter
from ml.testbed import resolve_testbed

# -- the source supernet, trained once and reused ------------------------------------------------

@dataclass(frozen=True)
class SourceSupernet:
    """A trained source supernet (CPU weights) and what training it cost."""

    state: dict[str, torch.Tensor]
    flops: int
    epochs: int
    final_loss: float
    wall_s: float


_SOURCE_CACHE: OrderedDict[tuple, SourceSupernet] = OrderedDict()
_SOURCE_CACHE_SIZE = 8


def _source_key(config: ImbNasConfig) -> tuple:
    # Everything the source split and its training depend on (not rho: the source is built
    # before the target is subsampled).
    return (config.dataset, config.seed, config.source_fraction, config.max_per_class,
            config.val_per_class, config.supernet_epochs, config.batch_size, config.lr,
            config.momentum, config.weight_decay, config.sandwich_random, config.device)


def source_supernet(config: ImbNasConfig, task: ImbalancedTask, space: SearchSpace,
                    device: torch.device, reporter: Reporter) -> tuple[SuperNet, SourceSupernet]:
    """The balanced source supernet for ``config``: from the cache, or trained now."""
    key = _source_key(config)
    if key not in _SOURCE_CACHE:
        start = time.perf_counter()

        def on_epoch(epoch: int, loss: float, flops: int) -> None:
            check_cancelled(reporter)
            reporter.log(f"source supernet: epoch {epoch + 1}/{config.supernet_epochs} "
                         f"loss {loss:.4f}")
            last_loss[0] = loss

        last_loss = [float("nan")]
        net, flops = train_source_supernet(
            task.source_x, task.source_y, task.num_classes, task.input_shape, space=space,
            epochs=config.supernet_epochs, optim=_optim(config, config.lr),
            num_random=config.sandwich_random, seed=config.seed, device=device,
            on_epoch=on_epoch)
        _SOURCE_CACHE[key] = SourceSupernet(
            state={k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            flops=flops, epochs=config.supernet_epochs, final_loss=last_loss[0],
            wall_s=time.perf_counter() - start)
        while len(_SOURCE_CACHE) > _SOURCE_CACHE_SIZE:
            _SOURCE_CACHE.popitem(last=False)
    else:
        reporter.log("source supernet: reused from this process's cache")
    _SOURCE_CACHE.move_to_end(key)
    cached = _SOURCE_CACHE[key]
    net = SuperNet(task.num_classes, task.input_shape, space)
    net.load_state_dict(cached.state)
    return net.to(device), cached


# -- one run --------------------------------------------------------------------------------------

def _optim(config: ImbNasConfig, lr: float) -> Optim:
    return Optim(lr=lr, momentum=config.momentum, weight_decay=config.weight_decay,
                 batch_size=config.batch_size)


def _host(config: ImbNasConfig):
    testbed = resolve_testbed(config.testbed)
    return testbed, (testbed.server or testbed.workers[0])


def run_strategy(strategy: Strategy, config: ImbNasConfig, reporter: Reporter) -> dict:
    """Run IMB-NAS with adaptation ``strategy`` (steps 1-5 of the module docstring)."""
    with method_run(config, reporter) as run:
        return _run(strategy, config, run)


def _run(strategy: Strategy, config: ImbNasConfig, run: MethodRun) -> dict:
    reporter, device = run.reporter, run.device
    testbed, host = _host(config)
    space = SearchSpace()
    check_cancelled(reporter)

    # 1. data
    task = build_task(config.dataset, config.rho, config.seed,
                      source_fraction=config.source_fraction, val_per_class=config.val_per_class,
                      max_per_class=config.max_per_class)
    reporter.log(f"task: {task.describe()}")
    source_y = task.source_y
    target_x, target_y = task.target_x.to(device), task.target_y.to(device)
    val_x, val_y = task.val_x.to(device), task.val_y.to(device)
    test_x, test_y = task.test_x.to(device), task.test_y.to(device)
    counts = task.target_counts
    # Ours: BatchNorm statistics of every evaluated subnet come from the target training images.
    calib_x = target_x[:CALIBRATION_SIZE]

    # 2. source supernet (reused artefact; not on this run's clock)
    pretrain_steps = config.supernet_epochs * steps_per_epoch(len(source_y), config.batch_size)
    source, source_info = (source_supernet(config, task, space, device, reporter)
                           if strategy.from_source else (None, None))

    # 3. adaptation
    net = prepare_supernet(strategy, source, num_classes=task.num_classes,
                           input_shape=task.input_shape, space=space, seed=config.seed,
                           device=device)
    adapt_steps = config.adapt_epochs * steps_per_epoch(len(target_y), config.batch_size)
    train_steps = adapt_steps if strategy.from_source else pretrain_steps + adapt_steps
    weights = loss_weights_for(strategy, counts, config.reweighting, config.beta)
    train_lr = config.adapt_lr if strategy.from_source else config.lr
    epoch_counter = [0]

    def on_adapt_epoch(epoch: int, loss: float, flops: int) -> None:
        testbed.compute(host, flops)
        epoch_counter[0] += 1
        step = epoch_counter[0]
        reporter.metric("loss", step, loss, host.clock_s)
        reporter.metric("supernet_accuracy", step,
                        balanced_accuracy(net, space.largest(), test_x, test_y, calib_x),
                        host.clock_s)
        check_cancelled(reporter)

    adapt_flops = adapt_supernet(strategy, net, target_x, target_y, steps=train_steps,
                                 optim=_optim(config, train_lr),
                                 num_random=config.sandwich_random, loss_weights=weights,
                                 seed=config.seed, on_epoch=on_adapt_epoch)

    # 4. search on the balanced validation split with the adapted head
    flops_limit = config.max_flops_fraction * net.flops(space.largest())
    search_flops = [0]

    def score(arch) -> float:
        flops = (len(val_y) + len(calib_x)) * net.flops(arch)
        testbed.compute(host, flops)
        search_flops[0] += flops
        return balanced_accuracy(net, arch, val_x, val_y, calib_x)

    def on_generation(generation: int, best) -> None:
        reporter.metric("val_accuracy", generation, best.score, host.clock_s)
        check_cancelled(reporter)

    result = search(config.search, space, score,
                    np.random.default_rng(derive_seed(config.seed, "imbnas-search")),
                    allowed=lambda arch: net.flops(arch) <= flops_limit, cost_fn=net.flops,
                    population=config.population, generations=config.generations,
                    parents=config.parents, mutation_prob=config.mutation_prob,
                    on_generation=on_generation)
    search_cost_s = host.clock_s
    search_cost_flops = adapt_flops + search_flops[0]
    reporter.metric("search_cost_s", 0, search_cost_s, host.clock_s)
    reporter.metric("search_flops", 0, search_cost_flops, host.clock_s)
    reporter.log(f"search: chose {result.best.label} (val balanced accuracy {result.score:.4f}, "
                 f"{result.evaluations} subnets evaluated)")

    # 5. retrain the chosen subnet with the same strategy, evaluate on the balanced test set
    def on_retrain_epoch(epoch: int, loss: float, flops: int) -> None:
        testbed.compute(host, flops)
        epoch_counter[0] += 1
        reporter.metric("loss", epoch_counter[0], loss, host.clock_s)
        reporter.metric("accuracy", epoch + 1,
                        balanced_accuracy(net, result.best, test_x, test_y, calib_x), host.clock_s)
        check_cancelled(reporter)

    retrain_flops = retrain_subnet(strategy, net, result.best, target_x, target_y,
                                   epochs=config.retrain_epochs,
                                   optim=_optim(config, config.adapt_lr),
                                   loss_weights=weights, seed=config.seed,
                                   on_epoch=on_retrain_epoch)
    report = accuracy_report(per_class_accuracy(net, result.best, test_x, test_y, calib_x), counts)
    final_step = config.retrain_epochs + 1
    for name, value in report.items():
        reporter.metric(name, final_step, value, host.clock_s)
    reporter.metric("sim_time_s", final_step, host.clock_s, host.clock_s)

    final = {
        **report,
        "val_accuracy": result.score,
        "search_cost_s": search_cost_s,
        "search_flops": float(search_cost_flops),
        "total_flops": float(search_cost_flops + retrain_flops),
        "sim_time_s": host.clock_s,
        "subnet_flops": float(net.flops(result.best)),
        "subnet_params": float(net.parameter_count(result.best)),
    }
    return run.summary(
        final,
        strategy=strategy.name,
        strategy_description=strategy.description,
        arch={**result.best.as_dict(), "label": result.best.label},
        subnets_evaluated=result.evaluations,
        task=task.describe(),
        budget={"train_steps": train_steps, "adapt_epochs": config.adapt_epochs,
                "retrain_epochs": config.retrain_epochs,
                "retrain_flops": float(retrain_flops)},
        source_pretrain=None if source_info is None else {
            "epochs": source_info.epochs, "steps": pretrain_steps,
            "flops": float(source_info.flops),
            "sim_s": testbed.compute_time(host, source_info.flops),
            "final_loss": source_info.final_loss},
        device=host.name,
    )
