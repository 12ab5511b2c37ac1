"""Measuring a set of images, and spoiling real images on purpose to see what the measures respond to.

- :func:`sample_quality`: the numbers of "Diffusion Models Beat GANs" for a set of (class-conditional) samples in
  one call: label accuracy (does a digit drawn for class y look like a y?), improved precision and recall
  (Kynkäänniemi et al. 2019: fidelity and coverage) and FID, all in the feature space of the shipped digits
  network.
- :func:`degrade`: controlled damage to real images: additive Gaussian noise, Gaussian blur, and dropped classes
  (a model that never draws some digits: mode dropping). Notebook 09 moves these knobs and watches FID.
"""
from __future__ import annotations

import math

import torch

from ..metrics import extract_features, fid_from_features, label_accuracy, precision_recall
from ..runtime import model_device

__all__ = ["sample_quality", "add_noise", "gaussian_blur", "drop_classes", "degrade"]


def sample_quality(samples: torch.Tensor, labels: torch.Tensor | None, real_features, feature_net,
                   k: int = 3) -> dict[str, float]:
    """Quality numbers of ``samples`` (N, C, H, W) in [-1, 1] against ``real_features`` (M, D) of real images.

    Returns ``{"accuracy", "precision", "recall", "fid"}``: accuracy is :func:`~ddpm_lite.metrics.label_accuracy`
    of the samples for the ``labels`` they were drawn for (NaN when ``labels`` is None), precision and recall are
    :func:`~ddpm_lite.metrics.precision_recall` with ``k`` neighbours, FID is
    :func:`~ddpm_lite.metrics.fid_from_features`. ``feature_net`` gives the features (and, for the accuracy, the
    class logits, e.g. the shipped :class:`~ddpm_lite.metrics.DigitsFeatureNet`).
    """
    samples = torch.as_tensor(samples).detach().float().cpu()
    device = model_device(feature_net)
    features = extract_features(samples, feature_net, device=device)
    real = real_features.detach().cpu().numpy() if isinstance(real_features, torch.Tensor) else real_features
    pr = precision_recall(real, features, k=k)
    accuracy = float("nan") if labels is None else label_accuracy(samples, torch.as_tensor(labels).cpu(),
                                                                   feature_net, device=device)
    return {"accuracy": accuracy, "precision": pr.precision, "recall": pr.recall,
            "fid": fid_from_features(features, real)}


def add_noise(images: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images + sigma * noise``, clipped to [-1, 1] (still valid images); the noise is drawn from ``generator``."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (images + sigma * noise).clamp(-1, 1)


def _blur_matrix(n: int, sigma: float, dtype, device) -> torch.Tensor:
    """(n, n) matrix of a 1-D Gaussian blur with reflected borders (any kernel width): rows sum to 1."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1)
    weights = torch.exp(-offsets.double() ** 2 / (2 * sigma ** 2))
    weights = weights / weights.sum()
    matrix = torch.zeros(n, n, dtype=torch.float64)
    period = max(2 * (n - 1), 1)
    for i in range(n):
        j = (i + offsets) % period  # reflect (without repeating the edge pixel), as often as needed
        j = torch.where(j >= n, period - j, j) if n > 1 else torch.zeros_like(j)
        matrix[i].index_add_(0, j, weights)
    return matrix.to(dtype=dtype, device=device)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each channel with a Gaussian of standard deviation ``sigma`` pixels (reflected borders); 0: unchanged."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return images.clone()
    h, w = images.shape[-2:]
    rows = _blur_matrix(h, sigma, images.dtype, images.device)
    cols = _blur_matrix(w, sigma, images.dtype, images.device)
    return rows @ images @ cols.T


def drop_classes(images: torch.Tensor, labels: torch.Tensor, drop: int, num_classes: int = 10):
    """Remove the last ``drop`` classes (labels ``num_classes - drop`` .. ``num_classes - 1``): (images, labels)."""
    if not 0 <= drop < num_classes:
        raise ValueError(f"drop must be in [0, {num_classes - 1}] (at least one class is kept), got {drop}")
    keep = labels < num_classes - drop
    return images[keep], labels[keep]


def degrade(images: torch.Tensor, labels: torch.Tensor, noise: float = 0.0, blur: float = 0.0, drop: int = 0,
            seed: int = 0, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the last ``drop`` classes, blur by ``blur`` pixels, then add noise of std ``noise``: (images, labels).

    The noise comes from ``seed`` and is drawn for the full set before classes are dropped, so moving one knob
    changes only what that knob does.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if not 0 <= drop < num_classes:
        raise ValueError(f"drop must be in [0, {num_classes - 1}] (at least one class is kept), got {drop}")
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed), dtype=images.dtype)
    keep = labels.to(images.device) < num_classes - drop
    x = gaussian_blur(images[keep], blur)
    return (x + noise * eps.to(images.device)[keep]).clamp(-1, 1), labels[keep.to(labels.device)]
