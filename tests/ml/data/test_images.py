"""Image data sets load offline, with a fixed test split and a clear error for missing CIFAR."""
import pickle

import numpy as np
import pytest
import torch

from ml.data import load_dataset


def test_mnist_has_fixed_stratified_split_and_normalised_inputs():
    data = load_dataset("mnist")
    assert data.train_x.shape == (4000, 1, 28, 28) and data.train_x.dtype == torch.float32
    assert data.test_x.shape == (1000, 1, 28, 28)
    assert data.train_y.dtype == torch.int64 and data.num_classes == 10
    assert torch.bincount(data.test_y).tolist() == [100] * 10
    assert abs(data.train_x.mean().item()) < 1e-3 and abs(data.train_x.std().item() - 1) < 1e-3


def test_seed_reorders_training_samples_but_keeps_the_test_set():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert a.input_shape == (1, 8, 8) and len(a.train_y) + len(a.test_y) == 1797
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_y, b.train_y)
    assert torch.equal(torch.bincount(a.train_y), torch.bincount(b.train_y))
    assert load_dataset("digits", seed=1) is b  # cached in-process


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def test_missing_cifar_says_which_files_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", root=str(tmp_path))
    message = str(err.value)
    assert "data_batch_1" in message and "test_batch" in message
    assert str(tmp_path / "cifar-10-batches-py") in message


def _write_batch(path, n, seed, label_key=b"labels"):
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
             label_key: rng.integers(0, 10, size=n).tolist()}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh)


def test_cifar10_reads_the_python_batch_format(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write_batch(folder / f"data_batch_{i}", 4, seed=i)
    _write_batch(folder / "test_batch", 3, seed=9)
    data = load_dataset("cifar10", root=str(tmp_path))
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10


def test_cifar100_reads_fine_labels_from_the_batch_folder_itself(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 6), ("test", 4)):
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"fine_labels": [99, 0, 42, 7, 1, 2][:n], b"coarse_labels": [0] * n}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    data = load_dataset("cifar100", root=str(folder))  # the batch folder works as root too
    assert data.num_classes == 100 and data.train_x.shape == (6, 3, 32, 32)
    assert sorted(data.train_y.tolist()) == [0, 1, 2, 7, 42, 99]
    assert sorted(data.test_y.tolist()) == [0, 7, 42, 99]


def test_missing_cifar100_names_its_archive_and_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ESTUARY_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar100")
    message = str(err.value)
    assert "cifar-100-python.tar.gz" in message and str(tmp_path / "cifar-100-python") in message
    assert "ESTUARY_DATA_DIR" in message


def test_cifar_batch_that_builds_arbitrary_objects_is_refused(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    with open(folder / "train", "wb") as fh:
        pickle.dump({b"data": print}, fh)  # refers to builtins.print
    _write_batch(folder / "test", 2, seed=0, label_key=b"fine_labels")
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_dataset("cifar100", root=str(tmp_path))
