"""Datasets for the course: 2-D toy distributions and small image sets.

Images are float32 in [-1, 1], shape (N, C, H, W), labels int64.

* ``toy_2d(name, n, seed)``: 2-D point clouds of about unit scale.
* ``load_dataset(name, split)``: "digits" (scikit-learn's bundled 8x8 digits,
  no download), "digits16" and "digits28" (the same, upsampled to 16x16 and to
  MNIST's 28x28), and "mnist", "fashion_mnist", "cifar10" (through torchvision;
  never downloaded unless ``download=True``; the download shows torchvision's
  progress bar).
* ``batch_indices`` / ``infinite_batches``: an endless, exactly resumable
  stream of random minibatches; batch ``step`` depends only on (seed, step).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .runtime import data_root

TOY_DATASETS = ("swiss_roll", "moons", "8gaussians", "checkerboard")
IMAGE_DATASETS = ("digits", "digits16", "digits28", "mnist", "fashion_mnist", "cifar10")
DIGITS_SIZES = {"digits": None, "digits16": 16, "digits28": 28}  # the embedded digits, upsampled or not
SPLITS = ("train", "test")

DIGITS_TEST_FRACTION = 0.2  # stratified: 1437 train / 360 test images
DIGITS_SPLIT_SEED = 0

# name -> (torchvision class, folder under root, files torchvision requires there)
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw", _MNIST_FILES),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", _MNIST_FILES),
    "cifar10": (
        "CIFAR10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """A torchvision dataset is not on disk (or is corrupt) and was not downloaded."""


# --------------------------------------------------------------------------- 2-D toys


def toy_2d(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points of a 2-D toy distribution as a float32 tensor (n, 2).

    Each distribution is centred and divided by a fixed constant so that its
    standard deviation is about 1; the result depends only on (name, n, seed).
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; known: {', '.join(TOY_DATASETS)}")
    from sklearn.datasets import make_moons, make_swiss_roll

    rng = np.random.default_rng(seed)
    if name == "swiss_roll":
        x = (make_swiss_roll(n, noise=0.5, random_state=seed)[0][:, [0, 2]] - [2.0, 0.0]) / 7.0
    elif name == "moons":
        x = (make_moons(n, noise=0.05, random_state=seed)[0] - [0.5, 0.25]) / 0.7
    elif name == "8gaussians":
        angles = rng.integers(0, 8, n) * (np.pi / 4)
        centres = np.sqrt(2) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        x = centres + 0.1 * rng.standard_normal((n, 2))
    else:  # checkerboard: the 8 "black" cells of a 4x4 board on [-2, 2]^2
        col = rng.integers(0, 4, n)
        row = 2 * rng.integers(0, 2, n) + col % 2
        x = (np.stack([col, row], axis=1) + rng.random((n, 2)) - 2) / np.sqrt(4 / 3)
    return torch.as_tensor(x, dtype=torch.float32)


# --------------------------------------------------------------------------- images


@dataclass(eq=False)
class ImageDataset(Dataset):
    """Images and labels held in memory.

    ``pixels`` is either uint8 in 0..255 (torchvision sets at native size,
    4x smaller than float32: CIFAR-10 train is 150 MB instead of 600 MB) or
    float32 already in [-1, 1]. Reading through ``dataset[index]`` converts
    only the selected rows, with ``p / 127.5 - 1`` for uint8 (0 -> -1, 255 -> 1).
    """

    name: str
    pixels: torch.Tensor  # (N, C, H, W), uint8 or float32
    labels: torch.Tensor  # (N,), int64
    num_classes: int

    def __post_init__(self):
        if self.pixels.ndim != 4 or len(self.pixels) != len(self.labels):
            shapes = f"{tuple(self.pixels.shape)} and {len(self.labels)}"
            raise ValueError(f"need pixels (N, C, H, W) and N labels, got {shapes}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, label) for an int; (images, labels) for a 1-D index tensor."""
        return _to_float(self.pixels[index]), self.labels[index]

    @property
    def images(self) -> torch.Tensor:
        """All images as float32 in [-1, 1]; a new full-size copy when stored as uint8."""
        return _to_float(self.pixels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])


def default_root() -> Path:
    """``$DDPM_LITE_DATA`` if set, else ``~/.cache/ddpm_lite/data``."""
    return data_root()


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    image_size: int | None = None,
    download: bool = False,
) -> ImageDataset:
    """Load an image dataset ("digits", "digits16", "digits28", "mnist", "fashion_mnist", "cifar10").

    ``image_size=None`` keeps the dataset's own size (8, 16, 28, 28, 28, 32); any
    other size resizes the original images (bicubic, antialiased, clamped to
    [-1, 1]). "digits16" and "digits28" are "digits" with a default size of 16
    and 28. ``root`` (for
    the torchvision sets) defaults to ``default_root()``; ``download=True`` is
    passed to torchvision. A missing dataset raises ``DatasetNotFoundError``.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; known: {', '.join(IMAGE_DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if name in DIGITS_SIZES:
        pixels, labels = _load_digits(split)
        image_size = image_size or DIGITS_SIZES[name]
    else:
        pixels, labels = _load_torchvision(name, split, Path(root) if root else default_root(), download)
    if image_size is not None and image_size != pixels.shape[-1]:
        pixels = torch.cat([_resize(_to_float(chunk), image_size) for chunk in pixels.split(4096)])
    return ImageDataset(name, pixels, labels, num_classes=10)


def _to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1]; float tensors pass through."""
    return pixels.float() / 127.5 - 1 if pixels.dtype == torch.uint8 else pixels


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize (antialiased, like PIL) of float images, clamped to [-1, 1]."""
    out = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(-1, 1)


def _load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits scaled 0..16 -> [-1, 1], with a fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images,
        digits.target,
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    pixels = torch.as_tensor(x, dtype=torch.float32)[:, None] / 16 * 2 - 1
    return pixels, torch.as_tensor(y, dtype=torch.int64)


def _load_torchvision(name: str, split: str, root: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 pixels (N, C, H, W) and int64 labels read by torchvision from ``root``."""
    import torchvision.datasets

    class_name, folder, files = _TORCHVISION[name]
    try:
        ds = getattr(torchvision.datasets, class_name)(root=str(root), train=split == "train", download=download)
    except (RuntimeError, OSError) as err:  # torchvision: not found, corrupted, or download failed
        if download and any(not (root / folder / f).is_file() for f in files):
            raise _download_failed(name, root, root / folder, files, err) from None
        raise _not_found(name, root / folder, files, err) from None
    pixels = torch.as_tensor(ds.data)
    pixels = pixels[:, None] if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)  # grey (N,H,W) / RGB (N,H,W,C)
    return pixels.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64)


def _not_found(name: str, folder: Path, files: tuple[str, ...], err: Exception) -> DatasetNotFoundError:
    missing = [f for f in files if not (folder / f).is_file()]
    problem = f"missing: {', '.join(missing)}" if missing else f"unreadable: {err}"
    return DatasetNotFoundError(
        f"dataset {name!r} not found in {folder} ({problem}). "
        f"Run load_dataset({name!r}, download=True) (CLI: --download) once on a machine with internet, "
        f"or copy the dataset's files to {folder}; "
        "or use the embedded 'digits' / 'digits16' data, which need no download."
    )


def _download_reason(err: Exception) -> str:
    """The cause of a failed download in a few words ('Temporary failure in name resolution', 'HTTP Error 503')."""
    text = str(getattr(err, "reason", None) or err)
    for pattern in (r"<urlopen error (?:\[Errno [-\d]+\] )?([^>]+)>", r"(HTTP Error \d+[^\n]*)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return re.sub(r"^\[Errno [-\d]+\] ", "", lines[-1] if lines else type(err).__name__)[:160]


def _download_failed(name: str, root: Path, folder: Path, files: tuple[str, ...], err: Exception):
    return DatasetNotFoundError(
        f"could not download {name!r} ({_download_reason(err)}; is this machine offline?). Put its files "
        f"({', '.join(files)}) in {folder} (under the root folder {root}, set with --root or $DDPM_LITE_DATA), "
        "or train on the embedded data instead with --data digits (no download needed)."
    )


# --------------------------------------------------------------------------- batches


def batch_indices(n: int, batch_size: int, step: int, seed: int = 0) -> torch.Tensor:
    """Indices (int64, length ``batch_size``) of minibatch ``step`` out of ``n`` items.

    The stream is epoch after epoch of random permutations, epoch ``e`` using
    ``np.random.default_rng([seed, e])``, cut into consecutive batches (a batch
    may straddle two epochs). It is a pure function of its arguments, so a
    trainer resumes exactly by restarting at its saved step.
    """
    if not 0 < batch_size <= n:
        raise ValueError(f"need 0 < batch_size <= n, got batch_size={batch_size}, n={n}")
    epoch, offset = divmod(step * batch_size, n)
    parts, needed = [], batch_size
    while needed > 0:
        part = np.random.default_rng([seed, epoch]).permutation(n)[offset : offset + needed]
        parts.append(part)
        needed -= len(part)
        epoch, offset = epoch + 1, 0
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


def infinite_batches(
    dataset: ImageDataset,
    batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) for steps ``start_step, start_step + 1, ...`` forever (see ``batch_indices``)."""
    step = start_step
    while True:
        x, y = dataset[batch_indices(len(dataset), batch_size, step, seed)]
        yield x.to(device), y.to(device)
        step += 1
