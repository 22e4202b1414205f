"""The balanced source, the long-tailed target and the balanced evaluation sets of IMB-NAS.

IMB-NAS adapts a supernet "trained on a balanced source dataset" to "an imbalanced target
dataset" (arXiv 2210.00136). Our source and target (ours, [I]): **two disjoint halves of the same
training set**. For every class, a seeded random half goes to the source and the other half to
the target pool, so

- the source is exactly balanced (every class the same size ``m_src``);
- the target shares the source's label space and image domain, like the paper's balanced CIFAR
  -> CIFAR-LT setting, so that only the class balance differs between them;
- no target image was seen while training the source supernet: what the frozen backbone brings to
  the target is features learnt on balanced data of the same classes, not memorised tail
  samples.

(Digits as source and MNIST as target would mix a change of resolution and domain into the
balanced -> long-tailed transfer the paper studies; we keep that one factor.)

From the target pool we first hold out a **balanced validation split** (``val_per_class`` of
every class; the search scores subnets on it), then keep a balanced pool of ``n_max`` per class
and subsample it with the core's ``long_tailed_indices(labels, rho, seed, profile="exp")``:
class c keeps ``floor(n_max * rho^(-c/(C-1)))`` samples, class 0 being the head.

The **test set is balanced**: the data set's test split cut to the same count per class (its
smallest class), so top-1 accuracy on it is the balanced top-1 accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ml.data import load_dataset, long_tailed_indices
from ml.method_run import derive_seed


@dataclass(frozen=True)
class ImbalancedTask:
    """Source (balanced), target (long-tailed), validation and test (balanced) tensors."""

    source_x: torch.Tensor
    source_y: torch.Tensor
    target_x: torch.Tensor
    target_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    name: str
    rho: float
    #: Indices into the data set's training split of the source, target and validation images.
    source_idx: np.ndarray
    target_idx: np.ndarray
    val_idx: np.ndarray

    @property
    def target_counts(self) -> torch.Tensor:
        """Training samples per class of the long-tailed target."""
        return torch.bincount(self.target_y, minlength=self.num_classes)

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "rho": self.rho,
            "source_per_class": int(len(self.source_y) // self.num_classes),
            "target_counts": self.target_counts.tolist(),
            "val_per_class": int(len(self.val_y) // self.num_classes),
            "test_per_class": int(len(self.test_y) // self.num_classes),
        }


def build_task(dataset: str, rho: float, seed: int, *, source_fraction: float = 0.5,
               val_per_class: int = 20, max_per_class: int | None = None,
               root: str | None = None) -> ImbalancedTask:
    """Split ``dataset``'s training set into a balanced source and a long-tailed target.

    ``source_fraction`` of every class (after capping each class at ``max_per_class``) goes to the
    source; the rest is the target pool, from which ``val_per_class`` per class are held out for
    validation and the remainder is subsampled with the exp profile at ratio ``rho``. The split
    and the subsample depend on ``seed``; the test set does not. ``root`` is the folder holding
    CIFAR batches (see :func:`ml.data.load_dataset`).
    """
    data = load_dataset(dataset, root=root, seed=0)
    labels = data.train_y.numpy()
    classes = data.num_classes
    per_class = int(np.bincount(labels, minlength=classes).min())
    if max_per_class is not None:
        per_class = min(per_class, max_per_class)
    n_source = int(per_class * source_fraction)
    n_pool = per_class - n_source - val_per_class
    if n_source < 1 or n_pool < 1:
        raise ValueError(
            f"{dataset} has {per_class} training samples per class: too few for "
            f"source_fraction={source_fraction} and val_per_class={val_per_class}")

    rng = np.random.default_rng(derive_seed(seed, "imbnas-split"))
    source, val, pool = [], [], []
    for c in range(classes):
        idx = rng.permutation(np.flatnonzero(labels == c))[:per_class]
        source.append(idx[:n_source])
        val.append(idx[n_source:n_source + val_per_class])
        pool.append(idx[n_source + val_per_class:])
    source_idx, val_idx, pool_idx = (np.sort(np.concatenate(p)) for p in (source, val, pool))
    keep = long_tailed_indices(labels[pool_idx], rho, seed=derive_seed(seed, "imbnas-lt"),
                               profile="exp")
    target_idx = pool_idx[keep]
    test_idx = balanced_indices(data.test_y.numpy(), classes)

    def take(x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return x[torch.from_numpy(idx)]

    return ImbalancedTask(
        source_x=take(data.train_x, source_idx), source_y=take(data.train_y, source_idx),
        target_x=take(data.train_x, target_idx), target_y=take(data.train_y, target_idx),
        val_x=take(data.train_x, val_idx), val_y=take(data.train_y, val_idx),
        test_x=take(data.test_x, test_idx), test_y=take(data.test_y, test_idx),
        num_classes=classes, input_shape=data.input_shape, name=dataset, rho=float(rho),
        source_idx=source_idx, target_idx=target_idx, val_idx=val_idx,
    )


def balanced_indices(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Sorted indices keeping the first ``min_c n_c`` samples of every class (deterministic)."""
    counts = np.bincount(labels, minlength=num_classes)
    k = int(counts.min())
    if k == 0:
        raise ValueError("a class has no test sample")
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:k] for c in range(num_classes)]))
