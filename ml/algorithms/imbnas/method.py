"""IMB-NAS in the catalogue: ``imb-nas`` and its three baselines, one adaptation strategy each.

Duggal, Peng, Zhou, Chau, "IMB-NAS: Neural Architecture Search for Imbalanced Datasets",
arXiv 2210.00136 (2022); reproduced by Zhiwei Yao, arXiv 2406.16972 (2024). papers.md §7.

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

import functools
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from ml.algorithms.imbnas.adapt import (
    STRATEGIES, Optim, Strategy, adapt_supernet, loss_weights_for, prepare_supernet,
    retrain_subnet, steps_per_epoch, train_source_supernet,
)
from ml.algorithms.imbnas.data import ImbalancedTask, build_task
from ml.algorithms.imbnas.evaluate import accuracy_report, balanced_accuracy, per_class_accuracy
from ml.algorithms.imbnas.losses import DEFAULT_BETA
from ml.algorithms.imbnas.search import search
from ml.algorithms.imbnas.supernet import SearchSpace, SuperNet
from ml.config import MethodConfig
from ml.method_run import derive_seed, torch_device
from ml.registry import Method, register
from ml.reporting import Cancelled, Reporter
from ml.testbed import resolve_testbed

PAPER = ("Duggal et al., IMB-NAS: Neural Architecture Search for Imbalanced Datasets, "
         "arXiv 2210.00136 (2022); reproduced in Yao, An Efficient NAS-based Approach for "
         "Handling Imbalanced Datasets, arXiv 2406.16972 (2024)")

#: Target training images used to calibrate a subnet's BatchNorm statistics before evaluation.
CALIBRATION_SIZE = 1000

#: Training images per class of each data set's fixed training split (the smallest class).
TRAIN_PER_CLASS = {"mnist": 400, "digits": 139, "cifar10": 5000, "cifar100": 500}


class ImbNasConfig(MethodConfig):
    """Data, supernet training, adaptation budget and search of an IMB-NAS run."""

    dataset: Literal["mnist", "digits", "cifar10", "cifar100"] = Field(
        default="mnist", description="Image data set; cifar10/cifar100 are read from "
                                     "$ESTUARY_DATA_DIR (default var/)")
    rho: float = Field(default=100.0, ge=1, le=1000,
                       description="Imbalance ratio of the long-tailed target: largest / smallest "
                                   "class (exp profile)")
    source_fraction: float = Field(default=0.5, ge=0.1, le=0.9,
                                   description="Share of every class that forms the balanced "
                                               "source; the rest is the target pool")
    max_per_class: int | None = Field(default=None, ge=10, le=100_000,
                                      description="Cap on training images per class before the "
                                                  "split (to scale CIFAR down); empty: no cap")
    val_per_class: int = Field(default=20, ge=1, le=1000,
                               description="Images per class held out from the target pool as "
                                           "the balanced validation split the search scores on")
    supernet_epochs: int = Field(default=6, ge=1, le=1000,
                                 description="Epochs of sandwich training on the balanced source")
    adapt_epochs: int = Field(default=8, ge=1, le=1000,
                              description="Epochs over the long-tailed target for adaptation "
                                          "(the same for every strategy)")
    retrain_epochs: int = Field(default=5, ge=0, le=1000,
                                description="Epochs retraining the chosen subnet with its "
                                            "strategy")
    batch_size: int = Field(default=64, ge=1, le=4096, description="Mini-batch size")
    lr: float = Field(default=0.1, gt=0, le=10,
                      description="SGD learning rate of supernet training (source; full "
                                  "search)")
    adapt_lr: float = Field(default=0.05, gt=0, le=10,
                            description="SGD learning rate of adaptation and retraining")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(default=5e-4, ge=0, le=1, description="SGD weight decay")
    sandwich_random: int = Field(default=2, ge=0, le=8,
                                 description="Random subnets per sandwich step, besides the "
                                             "largest and the smallest")
    reweighting: Literal["class-balanced", "inverse-frequency"] = Field(
        default="class-balanced",
        description="Loss weights of the re-weighted strategies: Cui et al.'s class-balanced "
                    "(1-beta)/(1-beta^n_c), or 1/n_c")
    beta: float = Field(default=DEFAULT_BETA, ge=0, lt=1,
                        description="beta of the class-balanced weights")
    search: Literal["evolutionary", "random"] = Field(default="evolutionary",
                                                      description="Subnet search algorithm")
    population: int = Field(default=16, ge=2, le=1000, description="Subnets per generation")
    generations: int = Field(default=4, ge=0, le=1000,
                             description="Generations after the initial population")
    parents: int = Field(default=4, ge=1, le=1000,
                         description="Best subnets kept as parents each generation")
    mutation_prob: float = Field(default=0.3, ge=0, le=1,
                                 description="Probability of re-drawing each choice when mutating")
    max_flops_fraction: float = Field(default=0.5, ge=0.05, le=1,
                                      description="FLOPs budget of the searched subnet, as a "
                                                  "fraction of the largest subnet's")


    @field_validator("val_per_class")
    @classmethod
    def _room_for_target(cls, value, info):
        data = info.data
        if "dataset" not in data or "source_fraction" not in data:
            return value
        per_class = TRAIN_PER_CLASS[data["dataset"]]
        if data.get("max_per_class") is not None:
            per_class = min(per_class, data["max_per_class"])
        pool = per_class - int(per_class * data["source_fraction"])
        if pool - value < 1:
            raise ValueError(f"{data['dataset']} leaves {pool} images per class for the target "
                             f"pool: val_per_class must be below {pool}")
        return value

    @field_validator("parents")
    @classmethod
    def _parents_fit(cls, value, info):
        population = info.data.get("population")
        if population is not None and value > population:
            raise ValueError(f"must be at most population ({population})")
        return value


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
            _check_stop(reporter)
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


def _check_stop(reporter: Reporter) -> None:
    if reporter.should_stop():
        raise Cancelled()


def _host(config: ImbNasConfig):
    testbed = resolve_testbed(config.testbed)
    return testbed, (testbed.server or testbed.workers[0])


def run_strategy(strategy: Strategy, config: ImbNasConfig, reporter: Reporter) -> dict:
    """Run IMB-NAS with adaptation ``strategy`` (steps 1-5 of the module docstring)."""
    wall_start = time.perf_counter()
    device = torch_device(config.device)
    testbed, host = _host(config)
    space = SearchSpace()
    _check_stop(reporter)

    # 1. data
    task = build_task(config.dataset, config.rho, config.seed,
                      source_fraction=config.source_fraction, val_per_class=config.val_per_class,
                      max_per_class=config.max_per_class)
    reporter.log(f"task: {task.describe()}")
    source_x, source_y = task.source_x.to(device), task.source_y.to(device)
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
        _check_stop(reporter)

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
        _check_stop(reporter)

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
        _check_stop(reporter)

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
    return {
        "final": final,
        "strategy": strategy.name,
        "strategy_description": strategy.description,
        "arch": {**result.best.as_dict(), "label": result.best.label},
        "subnets_evaluated": result.evaluations,
        "task": task.describe(),
        "budget": {"train_steps": train_steps, "adapt_epochs": config.adapt_epochs,
                   "retrain_epochs": config.retrain_epochs,
                   "retrain_flops": float(retrain_flops)},
        "source_pretrain": None if source_info is None else {
            "epochs": source_info.epochs, "steps": pretrain_steps,
            "flops": float(source_info.flops),
            "sim_s": testbed.compute_time(host, source_info.flops),
            "final_loss": source_info.final_loss},
        "device": host.name,
        "wall_time_s": time.perf_counter() - wall_start,
    }


# -- the catalogue --------------------------------------------------------------------------------

METRICS = ("accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy",
           "val_accuracy", "supernet_accuracy", "loss", "search_cost_s", "search_flops",
           "sim_time_s")


def _register(name: str, strategy: str, summary: str, baselines: tuple[str, ...] = ()) -> Method:
    return register(Method(
        name=name, paper=PAPER, summary=summary, config=ImbNasConfig,
        run=functools.partial(run_strategy, STRATEGIES[strategy]),
        baselines=baselines, metrics=METRICS, family="neural-architecture-search"))


IMB_NAS = _register(
    "imb-nas", "head-retrain-rw",
    "Adapt a weight-sharing supernet trained on balanced data to a long-tailed target by "
    "freezing its backbone and retraining the linear head with a class-balanced loss; search "
    "subnets on a balanced validation split.",
    baselines=("imb-nas-full-search", "imb-nas-finetune-ce", "imb-nas-finetune-rw"))
FULL_SEARCH = _register(
    "imb-nas-full-search", "full-search",
    "Full NAS on the long-tailed target: train the supernet from scratch on it (re-weighted "
    "loss), then search.")
FINETUNE_CE = _register(
    "imb-nas-finetune-ce", "finetune-ce",
    "Fine-tune the whole balanced source supernet on the long-tailed target with cross-entropy, "
    "then search.")
FINETUNE_RW = _register(
    "imb-nas-finetune-rw", "finetune-rw",
    "Fine-tune the whole balanced source supernet on the long-tailed target with a "
    "class-balanced loss, then search.")
