"""Configs of the split-learning family, each method's extending SplitFed's.

``splitfed`` <- ``adasfl`` (batch-size regulation) <- ``mergesfl`` (feature merging, worker
selection); ``parallelsfl`` (clusters, per-cluster frequency) extends the split core that
``splitfed`` extends too (the cut and K), without ``clients_per_round``: its clusters hold every
worker. A baseline's config is the experiment's config restricted to the keys it knows, so an
experiment's ``clients_per_round`` reaches SplitFed and AdaSFL too (equal participation).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from ml.fl.config import DatasetName, FederatedConfig, PartitionScheme

#: How a merged top-model step's learning rate follows the merged batch (see
#: :func:`ml.algorithms.split_learning.training.top_lr_factor`).
TopLRScaling = Literal["none", "sqrt", "linear"]


class SplitCoreConfig(FederatedConfig):
    """What every split method has: the cut and the iterations between bottom averaging."""

    local_iterations: int = Field(default=10, ge=1, le=100_000,
                                  description="Iterations between bottom-model averaging (K)")
    split_point: str | None = Field(default=None,
                                    description="Stage after which the model is cut (default: "
                                                "the model's own, e.g. conv2 for cnn)")


class SplitFedConfig(SplitCoreConfig):
    """SplitFed's knobs on top of the shared federated ones: the split core and how many
    workers take part in a round."""

    clients_per_round: float = Field(
        default=1.0, gt=0,
        description="Participants per round: a value <= 1 is a fraction of the workers, a "
                    "larger value a count (SplitFed and AdaSFL draw them uniformly at random, "
                    "MergeSFL by its worker_selection)")

    @field_validator("clients_per_round")
    @classmethod
    def _count_fits(cls, value: float, info: ValidationInfo) -> float:
        workers = info.data.get("workers")
        if value > 1 and (value != int(value) or (workers is not None and value > workers)):
            raise ValueError(f"a value > 1 is a count and must be a whole number <= workers "
                             f"({workers}), got {value}")
        return value


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


class MergeSFLConfig(AdaSFLConfig):
    """AdaSFL's knobs plus feature merging and the genetic worker selection."""

    feature_merging: bool = Field(
        default=True,
        description="Merge all participants' features into one top-model step (off: the top "
                    "is trained on each worker's features in turn, SFL-V2)")
    worker_selection: Literal["ga", "random"] = Field(
        default="ga", description="Choose participants by the genetic algorithm, or at random")
    mu: float = Field(default=0.5, ge=0, le=1000,
                      description="Weight of the slowest participant's time against the label "
                                  "KL divergence in the selection objective")
    ga_population: int = Field(default=24, ge=2, le=1000, description="GA population size")
    ga_generations: int = Field(default=30, ge=1, le=10_000, description="GA generations")

    top_lr_scaling: TopLRScaling = Field(
        default="none",
        description="Learning rate of the merged top-model step against lr: 'none' keeps lr "
                    "(the authors' code, ymliao98/MergeSFL: the server's optimiser runs at the "
                    "workers' rate), 'linear' multiplies it by merged batch / batch_size, "
                    "'sqrt' by the square root (ours, large-batch practice)")
    top_lr_warmup_rounds: int = Field(
        default=0, ge=0, le=100_000,
        description="Rounds over which the top-model rate ramps linearly from lr to its scaled "
                    "value (0: scaled from the start)")


class ParallelSFLConfig(SplitCoreConfig):
    """SplitFed's knobs plus clustering and per-cluster local updating frequency."""

    dataset: DatasetName = Field(
        default="digits",
        description="Image data set (default digits, so that the default run takes seconds)")
    partition: PartitionScheme = Field(default="label-pattern",
                                       description="How data is split over workers")
    local_iterations: int = Field(default=10, ge=1, le=100_000,
                                  description="Iterations per round of the fastest cluster "
                                              "(tau_max); every cluster with fixed frequency")
    clusters: int = Field(default=3, ge=1, le=1000, description="Number of clusters")
    min_cluster_size: int = Field(default=2, ge=1, le=1000, description="Smallest cluster")
    max_cluster_size: int = Field(default=8, ge=1, le=1000, description="Largest cluster")
    beta: float = Field(default=0.5, ge=0, le=1000,
                        description="Weight of the speed spread within a cluster against its "
                                    "label divergence from IID")
    clustering: Literal["utility", "random"] = Field(
        default="utility", description="Cluster by the utility, or deal workers at random")
    top_worker: Literal["shortest-iteration", "fastest"] = Field(
        default="shortest-iteration",
        description="Each cluster's top worker: the member giving the shortest iteration, or "
                    "one of the `clusters` fastest devices pinned to each cluster")
    adaptive_frequency: bool = Field(
        default=True, description="tau_k proportional to 1/T_k (off: local_iterations for all)")
    top_lr_scaling: TopLRScaling = Field(
        default="linear",
        description="Learning rate of each cluster's merged top-model step against lr (ours, as "
                    "MergeSFL): 'linear' multiplies it by merged batch / batch_size, 'sqrt' by "
                    "the square root, 'none' keeps lr")
    aggregation: Literal["normalized", "data-tau", "data"] = Field(
        default="data-tau",
        description="How the PS averages the clusters' models: 'data-tau' weights them by data "
                    "x tau_k, 'data' by data, 'normalized' averages each cluster's update "
                    "divided by tau_k and scales it by the mean tau (FedNova)")
    recluster_every: int = Field(default=5, ge=1, le=100_000,
                                 description="Re-cluster every this many rounds (R)")

    @field_validator("clusters")
    @classmethod
    def _clusters_fit(cls, value: int, info: ValidationInfo) -> int:
        workers = info.data.get("workers")
        if workers is not None and value > workers:
            raise ValueError(f"must be <= workers ({workers}), got {value}")
        return value

    @field_validator("min_cluster_size")
    @classmethod
    def _min_fits(cls, value: int, info: ValidationInfo) -> int:
        workers, clusters = info.data.get("workers"), info.data.get("clusters")
        if workers is not None and clusters is not None and clusters * value > workers:
            raise ValueError(f"{clusters} clusters of at least {value} need more than "
                             f"{workers} workers")
        return value

    @field_validator("max_cluster_size")
    @classmethod
    def _max_fits(cls, value: int, info: ValidationInfo) -> int:
        workers, clusters = info.data.get("workers"), info.data.get("clusters")
        smallest = info.data.get("min_cluster_size")
        if smallest is not None and value < smallest:
            raise ValueError(f"must be >= min_cluster_size ({smallest}), got {value}")
        if workers is not None and clusters is not None and clusters * value < workers:
            raise ValueError(f"{clusters} clusters of at most {value} cannot hold {workers} "
                             f"workers")
        return value
