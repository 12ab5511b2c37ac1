"""Tests for ddpm_lite.data.

The torchvision datasets are tested through torchvision's real readers on
tiny files that the tests write in the datasets' own formats: MNIST-style
idx-ubyte files in ``<root>/<Class>/raw/`` and CIFAR-10 pickle batches in
``<root>/cifar-10-batches-py/``. torchvision checks the CIFAR files against
the md5 sums of the real ones, so the CIFAR fixture replaces those expected
sums (class attributes ``train_list``, ``test_list``, ``meta``) with the sums
of the files it wrote; the integrity check itself still runs.
"""

import hashlib
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from torch.utils.data import DataLoader

from ddpm_lite.data import (
    IMAGE_DATASETS,
    TOY_DATASETS,
    DatasetNotFoundError,
    ImageDataset,
    batch_indices,
    default_root,
    infinite_batches,
    load_dataset,
    toy_2d,
)

MNIST_LIKE = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


# --------------------------------------------------------------------------- file writers


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx-ubyte file: magic (0, 0, 8 = uint8, ndim), big-endian uint32 dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_images(n: int, shape: tuple, seed: int) -> np.ndarray:
    """Random uint8 images whose first pixel is 255 and second is 0."""
    x = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    x.reshape(n, -1)[0, :2] = (255, 0)
    return x


def write_mnist(raw: Path) -> dict:
    """Train (5 images) and test (3 images) idx files in ``raw``; returns the arrays."""
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        images, labels = fake_images(n, (28, 28), seed=n), np.arange(n, dtype=np.uint8) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = images, labels
    return arrays


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """Five train batches of 2 images, a test batch of 2, and batches.meta; returns (root, arrays)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    arrays = {}

    def dump(name, obj):
        (folder / name).write_bytes(pickle.dumps(obj))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    train_list = []
    for i in range(1, 6):
        data, labels = fake_images(2, (3, 32, 32), seed=i).reshape(2, -1), [i, 9 - i]
        train_list.append(dump(f"data_batch_{i}", {"data": data, "labels": labels}))
        arrays[i] = data, labels
    data, labels = fake_images(2, (3, 32, 32), seed=0).reshape(2, -1), [3, 7]
    test_list = [dump("test_batch", {"data": data, "labels": labels})]
    arrays["test"] = data, labels
    meta_md5 = dump("batches.meta", {"label_names": [f"class{k}" for k in range(10)]})[1]

    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar, "train_list", train_list)
    monkeypatch.setattr(cifar, "test_list", test_list)
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": meta_md5})
    return tmp_path, arrays


# --------------------------------------------------------------------------- 2-D toys


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_shape_and_scale(name):
    x = toy_2d(name, 5000)
    assert x.shape == (5000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert x.mean(0).abs().max() < 0.35
    assert 0.8 < x.std() < 1.25
    assert x.abs().max() < 4


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_deterministic_given_seed(name):
    assert torch.equal(toy_2d(name, 100, seed=3), toy_2d(name, 100, seed=3))
    assert not torch.equal(toy_2d(name, 100, seed=3), toy_2d(name, 100, seed=4))


def test_toy_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        toy_2d("two_spirals", 10)
    assert all(name in str(info.value) for name in TOY_DATASETS)


# --------------------------------------------------------------------------- digits


def test_digits_split_sizes_shape_and_range():
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360)
    for ds in (train, test):
        assert ds.images.shape == (len(ds), 1, 8, 8) and ds.images.dtype == torch.float32
        assert ds.labels.dtype == torch.int64
        assert ds.image_shape == (1, 8, 8) and ds.num_classes == 10 and ds.name == "digits"
        assert ds.images.min() == -1 and ds.images.max() == 1
        # values 0..16 map to k / 8 - 1 exactly
        grid = (ds.images + 1) * 8
        assert torch.equal(grid, grid.round())


def test_digits_split_is_deterministic_and_stratified():
    a, b = load_dataset("digits", split="test"), load_dataset("digits", split="test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    train_counts = torch.bincount(load_dataset("digits").labels, minlength=10)
    test_counts = torch.bincount(a.labels, minlength=10)
    expected = 0.2 * (train_counts + test_counts)
    assert ((test_counts - expected).abs() <= 1).all()


def test_digits16_is_digits_upsampled():
    small, big = load_dataset("digits"), load_dataset("digits16")
    assert big.images.shape == (1437, 1, 16, 16) and big.image_shape == (1, 16, 16)
    assert big.images.min() >= -1 and big.images.max() <= 1
    assert torch.equal(big.labels, small.labels)
    assert torch.equal(big.images, load_dataset("digits", image_size=16).images)
    # averaging 2x2 blocks gives back roughly the 8x8 image
    pooled = torch.nn.functional.avg_pool2d(big.images, 2)
    assert (pooled - small.images).abs().mean() < 0.1


# --------------------------------------------------------------------------- torchvision sets


@pytest.mark.parametrize("name", MNIST_LIKE)
def test_mnist_like_from_idx_files(name, tmp_path):
    arrays = write_mnist(tmp_path / MNIST_LIKE[name] / "raw")
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset(name, split=split, root=tmp_path)
        images, labels = arrays[prefix]
        assert ds.images.shape == (len(images), 1, 28, 28) and ds.images.dtype == torch.float32
        assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10 and ds.name == name
        assert torch.equal(ds.labels, torch.as_tensor(labels, dtype=torch.int64))
        assert ds.images[0, 0, 0, 0] == 1.0 and ds.images[0, 0, 0, 1] == -1.0
        assert torch.equal(ds.images, torch.as_tensor(images, dtype=torch.float32)[:, None] / 127.5 - 1)
        assert ds.pixels.dtype == torch.uint8  # stored compactly, converted on access


def test_item_and_batch_access(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", root=tmp_path)
    image, label = ds[2]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert torch.equal(image, ds.images[2]) and label == ds.labels[2]
    images, labels = ds[torch.tensor([4, 0])]
    assert torch.equal(images, ds.images[[4, 0]]) and torch.equal(labels, ds.labels[[4, 0]])
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 1, 28, 28) and torch.equal(y, ds.labels[:4])


def test_mnist_resized(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", root=tmp_path, image_size=32)
    assert ds.images.shape == (5, 1, 32, 32) and ds.image_shape == (1, 32, 32)
    assert ds.images.dtype == torch.float32
    assert ds.images.min() >= -1 and ds.images.max() <= 1


def test_cifar10_from_pickle_batches(cifar_root):
    root, arrays = cifar_root
    train, test = load_dataset("cifar10", root=root), load_dataset("cifar10", split="test", root=root)
    assert train.images.shape == (10, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    assert train.image_shape == (3, 32, 32) and train.num_classes == 10 and train.name == "cifar10"
    raw = np.concatenate([arrays[i][0] for i in range(1, 6)])
    labels = sum((arrays[i][1] for i in range(1, 6)), [])
    # each row is 1024 red, 1024 green, 1024 blue values, each plane row-major
    expected = torch.as_tensor(raw, dtype=torch.float32).reshape(10, 3, 32, 32) / 127.5 - 1
    assert torch.equal(train.images, expected)
    assert train.images[0, 0, 0, 0] == 1.0 and train.images[0, 0, 0, 1] == -1.0
    assert torch.equal(train.labels, torch.tensor(labels, dtype=torch.int64))
    assert torch.equal(test.labels, torch.tensor(arrays["test"][1]))


@pytest.mark.parametrize(
    "name, folder",
    [("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw"), ("cifar10", "cifar-10-batches-py")],
)
def test_missing_dataset_gives_clear_fast_error(name, folder, tmp_path):
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, root=tmp_path)
    assert time.perf_counter() - start < 5
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert str(tmp_path / folder) in message
    assert "download=True" in message and "'digits'" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no torchvision traceback


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_LITE_DATA", str(tmp_path))
    assert default_root() == tmp_path
    write_mnist(tmp_path / "MNIST" / "raw")
    assert len(load_dataset("mnist")) == 5
    monkeypatch.delenv("DDPM_LITE_DATA")
    assert default_root() == Path.home() / ".cache" / "ddpm_lite" / "data"


def test_download_flag_reaches_torchvision(tmp_path, monkeypatch):
    calls = []

    def fake_download(self):
        calls.append(self.raw_folder)
        write_mnist(Path(self.raw_folder))

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    with pytest.raises(DatasetNotFoundError):
        load_dataset("mnist", root=tmp_path)
    assert calls == []
    assert len(load_dataset("mnist", root=tmp_path, download=True)) == 5
    assert calls == [str(tmp_path / "MNIST" / "raw")]


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_offline_download_gives_one_line_naming_the_folder_and_digits(name, folder, tmp_path, monkeypatch):
    from urllib.error import URLError

    def offline(self):
        if name == "mnist":  # torchvision tries every mirror, then raises one RuntimeError listing them
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://mirror/, got:\n"
                               "<urlopen error [Errno -3] Temporary failure in name resolution>\n")
        raise URLError(OSError(-3, "Temporary failure in name resolution"))

    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "download", offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, root=tmp_path, download=True)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"could not download {name!r}")
    assert "Temporary failure in name resolution" in message
    assert str(tmp_path / folder) in message and f"root folder {tmp_path}" in message
    assert "--data digits" in message and "download=True" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unknown_dataset_or_split():
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    assert all(name in str(info.value) for name in IMAGE_DATASETS)
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="validation")


def test_image_dataset_checks_shapes():
    with pytest.raises(ValueError):
        ImageDataset("bad", torch.zeros(3, 8, 8), torch.zeros(3, dtype=torch.int64), num_classes=10)


# --------------------------------------------------------------------------- batches


def test_batch_indices_pure_and_seeded():
    assert torch.equal(batch_indices(100, 8, step=7, seed=1), batch_indices(100, 8, step=7, seed=1))
    assert not torch.equal(batch_indices(100, 8, step=7, seed=1), batch_indices(100, 8, step=7, seed=2))
    assert not torch.equal(batch_indices(100, 8, step=7, seed=1), batch_indices(100, 8, step=8, seed=1))
    assert batch_indices(100, 8, step=0).dtype == torch.int64


@pytest.mark.parametrize("n, batch_size", [(12, 4), (10, 3)])
def test_each_epoch_covers_every_index_once(n, batch_size):
    epochs = 3
    steps = -(-epochs * n // batch_size)
    stream = torch.cat([batch_indices(n, batch_size, step, seed=5) for step in range(steps)])
    assert all(len(b) == batch_size for b in stream.split(batch_size))
    for e in range(epochs):
        assert sorted(stream[e * n : (e + 1) * n].tolist()) == list(range(n))
    assert not torch.equal(stream[:n], stream[n : 2 * n])  # a new permutation each epoch


def test_batch_indices_rejects_bad_batch_size():
    with pytest.raises(ValueError):
        batch_indices(5, 6, step=0)


def test_infinite_batches_resume_exactly():
    ds = load_dataset("digits")
    stream = infinite_batches(ds, batch_size=16, seed=3)
    first = [next(stream) for _ in range(5)]
    resumed = infinite_batches(ds, batch_size=16, seed=3, start_step=3)
    for (x, y), (rx, ry) in zip(first[3:], [next(resumed), next(resumed)]):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    x, y = first[0]
    assert x.shape == (16, 1, 8, 8) and y.shape == (16,)
    assert torch.equal(x, ds.images[batch_indices(len(ds), 16, step=0, seed=3)])
