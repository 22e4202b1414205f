"""IMB-NAS in the catalogue: ``imb-nas`` and its three baselines, one adaptation strategy each
(the run itself: runner.py)."""
from __future__ import annotations

import functools

from ml.algorithms.neural_architecture_search.adapt import STRATEGIES
from ml.algorithms.neural_architecture_search.config import PAPER, ImbNasConfig
from ml.algorithms.neural_architecture_search.runner import run_strategy
from ml.registry import Method, register

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
