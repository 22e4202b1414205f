"""The config keys every federated / split learning method shares.

FedAvg, SplitFed and the split-FL methods built on them (MergeSFL, ParallelSFL, AdaSFL) subclass
:class:`FederatedConfig` and add their own knobs, so ``dataset``, ``workers``, ``rounds``,
``partition`` ... keep one name and one meaning everywhere.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ml.config import MethodConfig

DatasetName = Literal["mnist", "mnist-5000", "digits", "cifar10", "cifar100"]
ModelName = Literal["cnn", "cnn-small", "alexnet", "resnet8", "resnet20", "resnet32", "resnet18"]
PartitionScheme = Literal["iid", "iid-repeated", "dirichlet", "label-pattern", "unequal", "long-tailed",
                          "pathological"]


class FederatedConfig(MethodConfig):
    """Data, model, workers and local SGD of a federated run on the emulated testbed."""

    dataset: DatasetName = Field(default="mnist", description="Image data set")
    model: ModelName = Field(default="cnn", description="Model (see ml.models)")
    workers: int = Field(default=10, ge=1, le=10_000,
                         description="Number of workers (edge devices of the testbed; a subset "
                                     "stratified by profile, or cycled when there are fewer)")
    rounds: int = Field(default=20, ge=1, le=100_000, description="Communication rounds")
    batch_size: int = Field(default=32, ge=1, le=4096, description="Local mini-batch size")
    lr: float = Field(default=0.05, gt=0, le=10, description="Local SGD learning rate")
    momentum: float = Field(default=0.0, ge=0, lt=1, description="Local SGD momentum")
    weight_decay: float = Field(default=0.0, ge=0, le=1, description="Local SGD weight decay")
    partition: PartitionScheme = Field(default="iid", description="How data is split over workers")
    partition_alpha: float = Field(default=0.5, gt=0, le=1000,
                                   description="Dirichlet concentration (partition=dirichlet)")
    partition_p: float = Field(default=0.8, ge=0, le=1,
                               description="Dominant-class share (partition=label-pattern)")
    partition_classes: int = Field(default=2, ge=1, le=100,
                                   description="Classes held by each worker "
                                               "(partition=pathological)")
    partition_rho: float = Field(default=10.0, ge=1, le=1000,
                                 description="Largest/smallest ratio: of worker sizes "
                                             "(partition=unequal) or of class sizes, exp profile "
                                             "(partition=long-tailed)")
    eval_every: int = Field(default=1, ge=1,
                            description="Evaluate on the test set every this many rounds "
                                        "(and after the last)")

    needs_server: ClassVar[bool] = True
