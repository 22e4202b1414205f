"""The set-up every federated run shares: data on the device, shards, testbed and model."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from ml.config import ConfigError
from ml.data import ImageDataset, load_dataset
from ml.data.partition import Partition
from ml.data.partition import partition as partition_labels
from ml.fl.batches import BatchStream
from ml.fl.config import FederatedConfig
from ml.method_run import generator
from ml.fl.workers import TrainData
from ml.models import SplittableModel, build_model, count_flops
from ml.models.flops import TRAINING_FLOPS_FACTOR
from ml.testbed.emulator import Testbed
from ml.testbed.presets import resolve_testbed


@dataclass
class Federation:
    """Everything a federated method starts from; build it with :func:`build_federation`."""

    config: FederatedConfig
    device: torch.device
    dataset: ImageDataset
    train: TrainData
    test_x: torch.Tensor
    test_y: torch.Tensor
    partition: Partition
    shards: list[torch.Tensor]
    testbed: Testbed
    model: SplittableModel

    def describe(self) -> str:
        """One line for the run's log: testbed, data and model."""
        kinds = Counter(d.profile.name for d in self.testbed.workers)
        server = self.testbed.server.name if self.testbed.server else "none"
        return (f"{len(self.testbed.workers)} workers ("
                f"{', '.join(f'{n} {k}' for k, n in kinds.items())}), server {server}; "
                f"{self.dataset.name}: {len(self.train.y)} training samples split "
                f"{self.config.partition}, {len(self.test_y)} test; model {self.config.model} "
                f"on {self.device}")

    def stream(self, worker: int) -> BatchStream:
        """Worker ``worker``'s mini-batches, shuffled by its own generator."""
        return BatchStream(self.shards[worker], self.config.batch_size,
                           generator(self.config.seed, "shuffle", worker))


def build_federation(config: FederatedConfig, device: torch.device) -> Federation:
    """Load and partition the data, resolve the testbed and build the model.

    Call inside :func:`ml.method_run.seeded_run` (model initialisation uses the global RNG).
    User-facing failures (missing CIFAR files, too many workers for the data) become
    :class:`ConfigError` naming the field.
    """
    testbed = resolve_testbed(config.testbed, config.workers)
    try:
        dataset = load_dataset(config.dataset, seed=config.seed)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError({"dataset": str(exc)}) from None
    try:
        parts = partition_labels(dataset.train_y.numpy(), config.workers, config.partition,
                                 seed=config.seed, alpha=config.partition_alpha,
                                 p=config.partition_p, rho=config.partition_rho,
                                 num_classes=dataset.num_classes,
                                 classes_per_worker=config.partition_classes)
    except ValueError as exc:
        raise ConfigError({"workers": str(exc)}) from None
    try:
        model = build_model(config.model, dataset.num_classes, dataset.input_shape).to(device)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError({"model": str(exc)}) from None
    return Federation(
        config=config,
        device=device,
        dataset=dataset,
        train=TrainData(dataset.train_x.to(device), dataset.train_y.to(device)),
        test_x=dataset.test_x.to(device),
        test_y=dataset.test_y.to(device),
        partition=parts,
        shards=[torch.from_numpy(idx).to(device) for idx in parts.indices],
        testbed=testbed,
        model=model,
    )


def work_per_sample(module: nn.Module, input_shape: tuple[int, ...],
                    device: torch.device) -> tuple[int, int]:
    """``(forward, training)`` FLOPs of ``module`` per sample of ``input_shape`` (on ``device``,
    where the module lives); training is forward plus backward (ml.models.flops)."""
    forward = count_flops(module, torch.zeros((1, *input_shape), device=device))
    return forward, TRAINING_FLOPS_FACTOR * forward
