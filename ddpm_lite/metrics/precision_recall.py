"""Improved precision and recall (Kynkäänniemi et al. 2019), as reported in "Diffusion Models Beat GANs".

Each feature set approximates its manifold by the union of balls around its points, each ball reaching the
point's k-th nearest neighbour in the same set (k = 3 in both papers). Then

* **precision** = the fraction of *fake* samples inside the real manifold (how many samples look real: fidelity);
* **recall** = the fraction of *real* samples inside the fake manifold (how much of the data the model covers).

FID mixes the two; a model that drops modes keeps its precision and loses recall.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

ROUNDING_SLACK = 64 * np.finfo(np.float64).eps  # of |a|^2 + |b|^2: the error of |a|^2 + |b|^2 - 2 a.b


class PrecisionRecall(NamedTuple):
    precision: float
    recall: float


def precision_recall(real_features, fake_features, k: int = 3, batch_size: int | None = None) -> PrecisionRecall:
    """Improved precision and recall of ``fake_features`` (M, D) against ``real_features`` (N, D).

    Distances are Euclidean, computed in float64 in blocks of ``batch_size`` rows (default: blocks of 128 MB);
    the k-th nearest neighbour of a point excludes the point itself. A point is inside a ball when its squared
    distance is at most the squared radius plus a rounding slack (so identical sets give exactly 1, even with
    duplicate points). Returns ``PrecisionRecall(precision, recall)``, a named tuple of floats in [0, 1].
    """
    real, fake = _features(real_features, "real_features"), _features(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes disagree: real {real.shape}, fake {fake.shape}")
    if not isinstance(k, int) or k < 1 or k >= min(len(real), len(fake)):
        raise ValueError(f"need 1 <= k < the size of each set, got k={k!r} for {len(real)} real and "
                         f"{len(fake)} fake samples")
    real_radii = _kth_neighbour_sq_distances(real, k, batch_size)
    fake_radii = _kth_neighbour_sq_distances(fake, k, batch_size)
    precision = _fraction_inside(fake, real, real_radii, batch_size)
    recall = _fraction_inside(real, fake, fake_radii, batch_size)
    return PrecisionRecall(precision, recall)


def _features(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty matrix (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _rows_per_block(batch_size: int | None, n_columns: int) -> int:
    return batch_size if batch_size is not None else max(1, 2**24 // max(n_columns, 1))  # 128 MB of float64


def _kth_neighbour_sq_distances(x: np.ndarray, k: int, batch_size: int | None) -> np.ndarray:
    """Squared distance of each point to its k-th nearest other point of the same set."""
    x_sq = np.einsum("ij,ij->i", x, x)
    radii = np.empty(len(x))
    step = _rows_per_block(batch_size, len(x))
    for start in range(0, len(x), step):
        a = x[start:start + step]
        d2 = x_sq[start:start + step, None] + x_sq[None, :] - 2 * (a @ x.T)
        rows = np.arange(len(a))
        d2[rows, start + rows] = -np.inf  # the point itself is its 0-th neighbour
        radii[start:start + len(a)] = np.maximum(np.partition(d2, k, axis=1)[:, k], 0.0)
    return radii


def _fraction_inside(points: np.ndarray, centres: np.ndarray, radii_sq: np.ndarray, batch_size: int | None) -> float:
    """The fraction of ``points`` within distance sqrt(radii_sq[j]) (plus rounding slack) of some ``centres[j]``.

    |p - c|^2 <= r^2 + slack * (|p|^2 + |c|^2) is tested as (1 - slack)(|p|^2 + |c|^2) - 2 p.c <= r^2.
    """
    c_sq = np.einsum("ij,ij->i", centres, centres)
    inside = 0
    step = _rows_per_block(batch_size, len(centres))
    for start in range(0, len(points), step):
        p = points[start:start + step]
        p_sq = np.einsum("ij,ij->i", p, p)
        m = (1 - ROUNDING_SLACK) * (p_sq[:, None] + c_sq[None, :]) - 2 * (p @ centres.T)
        inside += int(np.any(m <= radii_sq[None, :], axis=1).sum())
    return inside / len(points)
