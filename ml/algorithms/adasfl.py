"""AdaSFL: split federated learning with batch-size regulation (the baseline of MergeSFL).

Paper: Y. Liao et al., AdaSFL, IEEE/ACM Transactions on Networking 2023; code by the first author
``ymliao98/AdaSFL`` (papers.md §0, §6). Only the code could be read; the steps below follow it.

Steps, per round (K = ``local_iterations`` iterations):
1. The server measures each worker's per-iteration time and regulates the batch sizes so that
   fast workers take larger batches and every worker finishes an iteration at the same time
   (code: ``update_B``, ``b_i = (t_min / t_i) * B``).
2. It sends the global bottom model to every worker.
3. Each iteration: every worker runs its bottom on a batch of its own size b_i and sends the
   features and labels; the server trains the top on each worker's features (here one after
   another, as SFL-V2 / :mod:`ml.algorithms.splitfed`) and returns the feature gradients; the
   workers back-propagate and step.
4. After K iterations the server averages the bottoms with weights ``b_i / sum_j b_j``
   (code: ``average_weight``).

Ours: the regulation is the bounded water-filling of
:func:`ml.algorithms.split_control.regulate_batch_sizes` (the total batch ``batch_size x
workers`` is fixed and every b_i stays within ``[min_batch_size, max_batch_size]``), computed
from the device profiles (compute, bandwidth, latency) instead of measured times; the per-worker
top-model copies of the authors' code, averaged every iteration, are replaced by SFL-V2's shared
top updated per worker, so that AdaSFL differs from MergeSFL exactly by the missing feature
merging and worker selection.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from ml.algorithms.regulated_sfl import PlanningInputs, RoundPlan, train_regulated_sfl
from ml.algorithms.split_control import (IterationCost, regulate_batch_sizes,
                                         uniform_batch_sizes)
from ml.algorithms.splitfed import SplitFedConfig
from ml.fl import build_federation
from ml.method_run import seeded_run, torch_device
from ml.fl.config import DatasetName, PartitionScheme
from ml.registry import Method, register
from ml.reporting import Reporter


class AdaSFLConfig(SplitFedConfig):
    """SplitFed's knobs plus the batch-size regulation."""

    dataset: DatasetName = Field(
        default="digits",
        description="Image data set (default digits, so that the default run takes seconds)")
    partition: PartitionScheme = Field(default="label-pattern",
                                       description="How data is split over workers")
    batch_regulation: bool = Field(
        default=True,
        description="Regulate per-worker batch sizes to equalise iteration times (off: every "
                    "worker uses batch_size)")
    min_batch_size: int = Field(default=4, ge=1, le=4096,
                                description="Smallest batch a regulated worker gets")
    max_batch_size: int = Field(default=128, ge=1, le=4096,
                                description="Largest batch a regulated worker gets")

    @field_validator("min_batch_size")
    @classmethod
    def _min_fits(cls, value: int, info: ValidationInfo) -> int:
        batch = info.data.get("batch_size")
        if batch is not None and value > batch:
            raise ValueError(f"must be <= batch_size ({batch}), got {value}")
        return value

    @field_validator("max_batch_size")
    @classmethod
    def _max_fits(cls, value: int, info: ValidationInfo) -> int:
        batch = info.data.get("batch_size")
        if batch is not None and value < batch:
            raise ValueError(f"must be >= batch_size ({batch}), got {value}")
        return value


def plan_sizes(cost: IterationCost, total: int, config: AdaSFLConfig) -> np.ndarray:
    """Regulated (or, with regulation off, equal) batch sizes summing to ``total``."""
    if config.batch_regulation:
        return regulate_batch_sizes(cost, total, config.min_batch_size, config.max_batch_size)
    return uniform_batch_sizes(len(cost.per_sample_s), total)


def run(config: AdaSFLConfig, reporter: Reporter) -> dict:
    """Train with AdaSFL on the emulated testbed; report per-round metrics; return the summary."""
    device = torch_device(config.device)

    def planner(step: int, inputs: PlanningInputs) -> RoundPlan:
        everyone = np.arange(inputs.num_workers)
        return RoundPlan(everyone, plan_sizes(inputs.cost, config.batch_size * everyone.size,
                                              config))

    with seeded_run(config.seed, device):
        fed = build_federation(config, device)
        return train_regulated_sfl(config, fed, reporter, merging=False, planner=planner)


METHOD = register(Method(
    name="adasfl",
    paper="Liao et al., AdaSFL, IEEE/ACM Transactions on Networking 2023 (code ymliao98/AdaSFL)",
    summary="Split FL whose server regulates each worker's batch size so that heterogeneous "
            "workers finish every iteration together; bottoms averaged by batch size.",
    config=AdaSFLConfig,
    run=run,
    baselines=("splitfed", "fedavg"),
    metrics=("accuracy", "loss", "train_loss", "traffic_bytes", "traffic_bytes/features",
             "traffic_bytes/gradients", "traffic_bytes/model", "round_time_s", "sim_time_s",
             "waiting_time_s", "batch_label_kl"),
    family="split-learning",
))
