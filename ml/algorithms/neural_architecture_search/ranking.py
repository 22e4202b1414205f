"""IMB-NAS's first finding, measured: does a subnet's accuracy after training on balanced data
predict its accuracy after training on long-tailed data? (arXiv 2210.00136, 2406.16972.)

For one seed and imbalance ratio:

1. the task of :func:`~ml.algorithms.neural_architecture_search.data.build_task` (balanced source, long-tailed
   target from the same classes, balanced test set);
2. supernet B: the balanced source supernet of the method (sandwich rule, cross-entropy; the
   same cached artefact ``imb-nas`` adapts);
3. supernet L: a supernet trained from scratch on the long-tailed target with cross-entropy,
   for the same number of optimiser steps as B, from the same initialisation (ours);
4. a **fixed** sample of ``subnets`` distinct subnets (drawn with a seed that does not depend on
   the run's, so every seed and ratio ranks the same architectures), each scored with inherited
   weights on the balanced test set: with B (BatchNorm calibrated on the source) and with L
   (calibrated on the target);
5. Kendall's tau-b between the two accuracy lists (:func:`scipy.stats.kendalltau`).

A tau near 1 means balanced accuracy ranks architectures as long-tailed accuracy does (the
finding would fail); near 0, it does not predict it.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from ml.algorithms.neural_architecture_search.adapt import steps_per_epoch, train_source_supernet
from ml.algorithms.neural_architecture_search.data import build_task
from ml.algorithms.neural_architecture_search.evaluate import balanced_accuracy
from ml.algorithms.neural_architecture_search.runner import CALIBRATION_SIZE, ImbNasConfig, _optim, source_supernet
from ml.algorithms.neural_architecture_search.supernet import Arch, SearchSpace
from ml.method_run import torch_device
from ml.reporting import MemoryReporter

#: Seed of the fixed subnet sample (independent of the run's seed by design).
SAMPLE_SEED = 20221001


def fixed_subnets(space: SearchSpace, count: int, seed: int = SAMPLE_SEED) -> list[Arch]:
    """``count`` distinct subnets of ``space``, the same for every run."""
    if count > space.size():
        raise ValueError(f"the space has only {space.size()} subnets, asked for {count}")
    rng = np.random.default_rng(seed)
    chosen: dict[str, Arch] = {}
    while len(chosen) < count:
        arch = space.sample(rng)
        chosen.setdefault(arch.label, arch)
    return list(chosen.values())


def rank_correlation(config: ImbNasConfig, subnets: int = 30) -> dict:
    """Kendall's tau between balanced-trained and long-tailed-trained accuracy of a fixed
    sample of ``subnets`` subnets (steps 1-5 of the module docstring)."""
    device = torch_device(config.device)
    space = SearchSpace()
    task = build_task(config.dataset, config.rho, config.seed,
                      source_fraction=config.source_fraction, val_per_class=config.val_per_class,
                      max_per_class=config.max_per_class)
    balanced, _ = source_supernet(config, task, space, device, MemoryReporter())
    steps = config.supernet_epochs * steps_per_epoch(len(task.source_y), config.batch_size)
    target_epochs = max(1, round(steps / steps_per_epoch(len(task.target_y), config.batch_size)))
    long_tailed, _ = train_source_supernet(
        task.target_x.to(device), task.target_y.to(device), task.num_classes, task.input_shape,
        space=space, epochs=target_epochs, optim=_optim(config, config.lr),
        num_random=config.sandwich_random, seed=config.seed, device=device)
    test_x, test_y = task.test_x.to(device), task.test_y.to(device)
    source_calib = task.source_x[:CALIBRATION_SIZE].to(device)
    target_calib = task.target_x[:CALIBRATION_SIZE].to(device)
    archs = fixed_subnets(space, subnets)
    with torch.no_grad():
        acc_balanced = [balanced_accuracy(balanced, a, test_x, test_y, source_calib)
                        for a in archs]
        acc_long_tailed = [balanced_accuracy(long_tailed, a, test_x, test_y, target_calib)
                           for a in archs]
    tau, p_value = stats.kendalltau(acc_balanced, acc_long_tailed)
    return {
        "kendall_tau": float(tau) if np.isfinite(tau) else 0.0,
        "p_value": float(p_value) if np.isfinite(p_value) else 1.0,
        "subnets": [a.label for a in archs],
        "balanced_accuracy": acc_balanced,
        "long_tailed_accuracy": acc_long_tailed,
        "target_epochs": target_epochs,
    }
