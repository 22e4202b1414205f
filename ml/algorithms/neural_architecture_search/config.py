"""The config of an IMB-NAS run (shared by ``imb-nas`` and its baselines, so they compare on
the same data, seed, budget and testbed)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ml.algorithms.neural_architecture_search.losses import DEFAULT_BETA
from ml.config import MethodConfig

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
