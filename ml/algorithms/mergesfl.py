"""MergeSFL: split federated learning with feature merging and batch-size regulation.

Paper: Y. Liao, Y. Xu, H. Xu, L. Wang, Z. Yao, C. Qiao, "MergeSFL: Split Federated Learning with
Feature Merging and Batch Size Regulation", ICDE 2024 (arXiv 2311.13348). papers.md §6.

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
   [I: papers.md's reading of "adaptive aggregation"].

Ours (named as such in papers.md or not fixed by it): the batch-size formula (bounded
water-filling that equalises compute + feature upload + gradient download, total batch fixed:
:func:`~ml.algorithms.split_control.regulate_batch_sizes`); the GA's encoding (fixed-size worker
subsets), operators and the unit-free time term (divided by the median worker's time on an even
share); the state the control module uses (device profiles and label histograms, known
exactly); plain SGD with momentum for both halves; the merged top step's learning rate
scaled with the merged batch against ``batch_size`` (``top_lr_scaling``, default linear).

Ablations (config): ``feature_merging=false`` trains the top on each worker's features in turn
(SFL-V2, as SplitFed and AdaSFL); ``batch_regulation=false`` gives every participant
``batch_size``; ``worker_selection`` = ``random`` draws the participants uniformly.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from ml.algorithms.adasfl import AdaSFLConfig, plan_sizes
from ml.algorithms.regulated_sfl import PlanningInputs, RoundPlan, train_regulated_sfl
from ml.algorithms.split_control import select_workers_ga
from ml.algorithms.split_training import TopLRScaling
from ml.fl import build_federation, participants_count
from ml.method_run import derive_seed, seeded_run, torch_device
from ml.registry import Method, register
from ml.reporting import Reporter


class MergeSFLConfig(AdaSFLConfig):
    """AdaSFL's knobs plus feature merging and the genetic worker selection."""

    feature_merging: bool = Field(
        default=True,
        description="Merge all participants' features into one top-model step (off: the top "
                    "is trained on each worker's features in turn, SFL-V2)")
    clients_per_round: float = Field(
        default=1.0, gt=0,
        description="Participants per round: a value <= 1 is a fraction of the workers, a "
                    "larger value a count")
    worker_selection: Literal["ga", "random"] = Field(
        default="ga", description="Choose participants by the genetic algorithm, or at random")
    mu: float = Field(default=0.5, ge=0, le=1000,
                      description="Weight of the slowest participant's time against the label "
                                  "KL divergence in the selection objective")
    ga_population: int = Field(default=24, ge=2, le=1000, description="GA population size")
    ga_generations: int = Field(default=30, ge=1, le=10_000, description="GA generations")

    top_lr_scaling: TopLRScaling = Field(
        default="linear",
        description="Learning rate of the merged top-model step against lr (ours): 'linear' "
                    "multiplies it by merged batch / batch_size, 'sqrt' by the square root, "
                    "'none' keeps lr")
    top_lr_warmup_rounds: int = Field(
        default=0, ge=0, le=100_000,
        description="Rounds over which the top-model rate ramps linearly from lr to its scaled "
                    "value (0: scaled from the start)")

    @field_validator("clients_per_round")
    @classmethod
    def _count_fits(cls, value: float, info: ValidationInfo) -> float:
        workers = info.data.get("workers")
        if value > 1 and (value != int(value) or (workers is not None and value > workers)):
            raise ValueError(f"a value > 1 is a count and must be a whole number <= workers "
                             f"({workers}), got {value}")
        return value


def make_planner(config: MergeSFLConfig):
    """The control module: a round's participants and batch sizes."""

    def planner(step: int, inputs: PlanningInputs) -> RoundPlan:
        n = participants_count(config.clients_per_round, inputs.num_workers)
        total = config.batch_size * n
        rng = np.random.default_rng(derive_seed(config.seed, "selection", step))
        if config.worker_selection == "random" or n == inputs.num_workers:
            members = np.sort(rng.choice(inputs.num_workers, size=n, replace=False))
            return RoundPlan(members, plan_sizes(inputs.cost.subset(members), total, config))
        best = select_workers_ga(
            inputs.distributions, inputs.cost, n, total, config.min_batch_size,
            config.max_batch_size, config.mu, rng, regulate=config.batch_regulation,
            population=config.ga_population, generations=config.ga_generations)
        return RoundPlan(best.members, best.batch_sizes)

    return planner


def run(config: MergeSFLConfig, reporter: Reporter) -> dict:
    """Train with MergeSFL on the emulated testbed; report per-round metrics; return the summary."""
    device = torch_device(config.device)
    with seeded_run(config.seed, device):
        fed = build_federation(config, device)
        return train_regulated_sfl(config, fed, reporter, merging=config.feature_merging,
                                   planner=make_planner(config),
                                   top_lr_scaling=config.top_lr_scaling,
                                   top_lr_warmup_rounds=config.top_lr_warmup_rounds)


METHOD = register(Method(
    name="mergesfl",
    paper="Liao et al., MergeSFL: Split Federated Learning with Feature Merging and Batch Size "
          "Regulation, ICDE 2024 (arXiv 2311.13348)",
    summary="Split FL whose server merges the features of a genetically selected, label-balanced "
            "set of workers into one top-model step, with batch sizes regulated per worker.",
    config=MergeSFLConfig,
    run=run,
    baselines=("adasfl", "splitfed", "fedavg"),
    metrics=("accuracy", "loss", "train_loss", "traffic_bytes", "traffic_bytes/features",
             "traffic_bytes/gradients", "traffic_bytes/model", "round_time_s", "sim_time_s",
             "waiting_time_s", "batch_label_kl", "participants", "top_lr"),
    family="split-learning",
))
