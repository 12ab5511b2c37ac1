"""Fréchet Inception Distance (Heusel et al. 2017), as in "Diffusion Models Beat GANs" (sec. 3 and App. B).

Fit a Gaussian to the features of each image set; FID is the SQUARED Fréchet (2-Wasserstein) distance of the two
(Heusel et al. 2017, eq. 6)::

    FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)

**How tr sqrt(S1 S2) is computed.** pytorch-fid takes the general matrix square root ``scipy.linalg.sqrtm(S1 @
S2)`` (a complex Schur decomposition), which is slow at 2048 dimensions and loses digits when the covariances
are singular (fewer images than dimensions, or dead features). Here both covariances are factored, ``S1 = A A^T``
and ``S2 = B B^T`` (pivoted Cholesky, LAPACK ``dpstrf``, which also handles singular matrices), and::

    tr sqrt(S1 S2) = sum of the singular values of A^T B      (the nuclear norm of A^T B)

because ``S1 S2 = A (A^T B B^T)`` has the eigenvalues of ``(A^T B)(A^T B)^T``, whose square roots are the singular
values of ``A^T B``. Singular values come with an absolute error of about eps |A^T B| and enter the sum as they
are; the symmetric form ``sum sqrt(eigvalsh(sqrt(S1) S2 sqrt(S1)))`` instead takes square roots of eigenvalues
that rounding has moved by eps |S|, which costs half the digits wherever an eigenvalue should be 0.

``bench/fid_speed.py`` measures, in significant digits of FID against a 40-digit mpmath reference: 13.5-15 on
full-rank statistics (sqrtm 11.7-14); 8.3-9 with fewer samples than dimensions (sqrtm and eigh 6.7-7.7); 14 on
statistics of rank 56 of 64 (sqrtm and eigh 7.4); and a third of sqrtm's time at 2048 dimensions. With fewer
samples than dimensions no method that starts from float64 statistics does much better: rounding the covariance
moves its zero eigenvalues by about eps |S| and so tr sqrt(S1 S2) by about sqrt(eps) relative (the reference
itself is that far from the FID of the features). :func:`fid_from_features` avoids this by factoring such a set
by its centred features (about 15 digits).

**Reference statistics** of a dataset are cached on disk by :func:`reference_statistics`, under a key that
hashes the extractor's class, preprocessing version and ``state_dict``, and the dataset's name, split, size,
image shape and pixels, so a stale file is never read.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn
from tqdm.auto import tqdm

from ..runtime import eval_mode, model_device

PREPROCESSING_VERSION = 1  # how images reach the extractor (float32 in [-1, 1], (B, C, H, W)); bump on change
CACHE_FORMAT = 1
SYMMETRY_TOLERANCE = 1e-5  # relative to max |sigma|
PSD_TOLERANCE = 1e-6  # a negative Schur-complement pivot below -tol * max diag(sigma): not a covariance


# --------------------------------------------------------------------------- statistics and the distance


def feature_statistics(features, chunk_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``mu`` (D,) and unbiased covariance ``sigma`` (D, D) of ``features`` (N, D), both float64.

    ``sigma`` equals ``np.cov(features, rowvar=False)``: centred in float64 first (two passes), accumulated in
    chunks of ``chunk_size`` rows, so float32 features of 50,000 images need no float64 copy.
    """
    f = _as_array(features, "features")
    if f.ndim != 2:
        raise ValueError(f"features must be a matrix (N, D), got shape {f.shape}")
    n, d = f.shape
    if n < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {n}")
    if d == 0:
        raise ValueError("features have no dimensions (D = 0)")
    mu = np.zeros(d)
    for i in range(0, n, chunk_size):
        chunk = f[i:i + chunk_size].astype(np.float64)
        if not np.isfinite(chunk).all():
            bad = i + np.flatnonzero(~np.isfinite(chunk).all(axis=1))
            raise ValueError(f"features contain NaN or inf (rows {bad[:5].tolist()}{'...' if len(bad) > 5 else ''})")
        mu += chunk.sum(axis=0)
    mu /= n
    sigma = np.zeros((d, d))
    for i in range(0, n, chunk_size):
        centred = f[i:i + chunk_size].astype(np.float64) - mu
        sigma += centred.T @ centred
    sigma /= n - 1
    return mu, (sigma + sigma.T) / 2


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """FID between N(mu1, sigma1) and N(mu2, sigma2): a float >= 0, never NaN or complex.

    ``sigma`` must be symmetric positive semidefinite (singular is fine: fewer samples than dimensions, dead
    features). tr sqrt(sigma1 sigma2) is the nuclear norm of A^T B with sigma1 = A A^T, sigma2 = B B^T (see the
    module docstring). Rounding can make the exact 0 of identical statistics a tiny negative number; the result
    is clipped at 0. Bad input (shapes that disagree, non-square or non-symmetric sigma, NaN) raises ValueError.
    """
    mu1, mu2 = _vector(mu1, "mu1"), _vector(mu2, "mu2")
    sigma1, sigma2 = _covariance(sigma1, "sigma1"), _covariance(sigma2, "sigma2")
    if not len(mu1) == len(mu2) == len(sigma1) == len(sigma2):
        raise ValueError(f"the statistics disagree in dimension: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    return _fid_value(mu1, sigma1, mu2, sigma2, _trace_sqrt_product(sigma1, sigma2))


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr sqrt(sigma1 sigma2) of two covariance matrices: the sum of the singular values of A^T B."""
    sigma1, sigma2 = _covariance(sigma1, "sigma1"), _covariance(sigma2, "sigma2")
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"sigma1 {sigma1.shape} and sigma2 {sigma2.shape} differ in shape")
    return _trace_sqrt_product(sigma1, sigma2)


def psd_factor(sigma, name: str = "sigma") -> np.ndarray:
    """A factor F (D, r) with F F^T = sigma, r = the numerical rank, by pivoted Cholesky (LAPACK dpstrf).

    The factorisation stops at the first pivot <= 0, so rounding noise in the null space of a singular sigma is
    kept only where it is positive, as a square root of the clipped eigenvalues would. A clearly negative pivot
    (below ``-PSD_TOLERANCE * max diag``) means sigma is not positive semidefinite: ValueError.
    """
    sigma = _covariance(sigma, name)
    d = len(sigma)
    c, piv, rank, info = scipy.linalg.lapack.dpstrf(sigma, lower=1, tol=0.0)
    if info < 0:
        raise RuntimeError(f"LAPACK dpstrf: argument {-info} had an illegal value")
    lower = np.tril(c[:, :rank])
    if rank < d:
        residual = np.diag(sigma)[piv[rank:] - 1] - np.einsum("ij,ij->i", lower[rank:], lower[rank:])
        scale = max(float(np.max(np.abs(np.diag(sigma)))), np.finfo(float).tiny)
        if residual.min() < -PSD_TOLERANCE * scale:
            raise ValueError(f"{name} is not positive semidefinite (a Schur-complement pivot of {residual.min():.3g} "
                             f"with max diag {scale:.3g}); is it a covariance matrix?")
    factor = np.empty_like(lower)
    factor[piv - 1] = lower  # sigma = P L L^T P^T, P[piv[k] - 1, k] = 1
    return factor


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    return _nuclear_norm(psd_factor(sigma1, "sigma1").T @ psd_factor(sigma2, "sigma2"))


def _nuclear_norm(m: np.ndarray) -> float:
    """The sum of the singular values of ``m``."""
    if m.size == 0:
        return 0.0
    try:
        singular_values = scipy.linalg.svd(m, compute_uv=False, check_finite=False, lapack_driver="gesdd")
    except np.linalg.LinAlgError:  # gesdd rarely fails to converge; gesvd is slower and sturdier
        singular_values = scipy.linalg.svd(m, compute_uv=False, check_finite=False, lapack_driver="gesvd")
    return float(np.sort(singular_values).sum())


def _fid_value(mu1, sigma1, mu2, sigma2, tr_covmean: float) -> float:
    diff = mu1 - mu2
    value = math.fsum([float(diff @ diff), float(np.trace(sigma1)), float(np.trace(sigma2)), -2.0 * tr_covmean])
    return max(value, 0.0)


def fid_from_features(features1, features2) -> float:
    """FID between two feature sets (N1, D) and (N2, D).

    Equals ``frechet_distance(*feature_statistics(features1), *feature_statistics(features2))``, except that a
    set with no more samples than dimensions (N <= D: a singular covariance) enters tr sqrt(S1 S2) through its
    exact factor, the centred features / sqrt(N - 1), instead of a factor of its covariance. Rounding that
    covariance to float64 moves its zero eigenvalues by about eps |S|, and so the FID by about sqrt(eps)
    relative (9 significant digits are left); the exact factor keeps about 12.
    """
    f1, f2 = _as_array(features1, "features1"), _as_array(features2, "features2")
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"need two feature matrices (N, D) of the same D, got shapes {f1.shape} and {f2.shape}")
    (mu1, sigma1), (mu2, sigma2) = feature_statistics(f1), feature_statistics(f2)
    a = _factor_from_features(f1, mu1, sigma1, "sigma1")
    b = _factor_from_features(f2, mu2, sigma2, "sigma2")
    return _fid_value(mu1, sigma1, mu2, sigma2, _nuclear_norm(a.T @ b))


def _factor_from_features(f: np.ndarray, mu: np.ndarray, sigma: np.ndarray, name: str) -> np.ndarray:
    """A (D, r) with A A^T = sigma: the centred features / sqrt(N - 1) when N <= D, else a factor of sigma."""
    n, d = f.shape
    if n <= d:
        return (f.astype(np.float64) - mu).T / math.sqrt(n - 1)
    return psd_factor(sigma, name)


# --------------------------------------------------------------------------- images -> features


@torch.no_grad()
def extract_features(images, extractor, batch_size: int = 256, device: torch.device | str | None = None,
                     progress: bool = False) -> np.ndarray:
    """Features (N, D) of ``images`` through ``extractor`` (any ``nn.Module`` or callable), as a numpy array.

    ``images``: a tensor or array (N, C, H, W) of floats in [-1, 1] (uint8 0..255 is mapped there as in
    :mod:`ddpm_lite.data`), an :class:`~ddpm_lite.data.ImageDataset`, or an iterable of batches (tensors, or
    tuples whose first item is the images, e.g. a DataLoader). The extractor runs in eval mode (its mode is
    restored afterwards) on ``device`` (default: the device of its parameters); outputs (B, D, 1, 1) are
    flattened to (B, D).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else model_device(extractor)
    out = []
    with eval_mode(extractor):
        total = _num_images(images)
        with tqdm(total=total, desc="features", unit="img", disable=not progress, leave=False) as bar:
            for batch in _batches(images, batch_size):
                f = extractor(batch.to(device))
                if not isinstance(f, torch.Tensor) or len(f) != len(batch):
                    got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                    raise ValueError(f"the extractor must return a tensor (B, D) for B images, got {got} "
                                     f"for {len(batch)} images")
                out.append(f.reshape(len(batch), -1).detach().cpu())
                bar.update(len(batch))
    if not out:
        raise ValueError("no images to extract features from")
    features = torch.cat(out).numpy()
    if not np.isfinite(features).all():
        raise ValueError("the extractor produced NaN or inf features")
    return features


def feature_dim(extractor, image_shape: tuple[int, int, int], device=None) -> int:
    """The extractor's feature size: its ``feature_dim`` attribute, else the size of its output on one batch of
    two zero images of ``image_shape`` (C, H, W), the real input size (no 299x299 probe)."""
    dim = getattr(extractor, "feature_dim", None)
    if isinstance(dim, int):
        return dim
    probe = torch.zeros(2, *image_shape)
    return int(extract_features(probe, extractor, device=device).shape[1])


def compute_fid(samples, reference, extractor, batch_size: int = 256, device: torch.device | str | None = None,
                progress: bool = False) -> float:
    """FID between ``samples`` and ``reference`` images through ``extractor``.

    ``samples`` and ``reference`` take any form :func:`extract_features` accepts; ``reference`` may also be
    precomputed statistics ``(mu, sigma)`` (e.g. from :func:`reference_statistics`) or a dict with "mu" and
    "sigma". FID is biased upwards by small sample sizes: compare FIDs of equally many samples (the papers use
    50,000).
    """
    mu_s, sigma_s = feature_statistics(extract_features(samples, extractor, batch_size, device, progress))
    stats = _as_statistics(reference)
    if stats is None:
        stats = feature_statistics(extract_features(reference, extractor, batch_size, device, progress))
    if len(stats[0]) != len(mu_s):
        raise ValueError(f"the reference statistics have {len(stats[0])} dimensions, the extractor gives "
                         f"{len(mu_s)}: were they made with another extractor?")
    return frechet_distance(mu_s, sigma_s, *stats)


# --------------------------------------------------------------------------- cached reference statistics


def default_cache_dir() -> Path:
    """``~/.cache/ddpm_lite/fid_stats``."""
    return Path.home() / ".cache" / "ddpm_lite" / "fid_stats"


def state_dict_hash(module: nn.Module) -> str:
    """SHA-256 of a module's state_dict: every entry's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def statistics_key(dataset, dataset_name: str, split: str, extractor: nn.Module) -> dict:
    """Everything cached statistics depend on, as a JSON-able dict (its SHA-256 is the cache key)."""
    pixels = dataset.pixels.contiguous()
    return {
        "cache_format": CACHE_FORMAT,
        "preprocessing_version": PREPROCESSING_VERSION,
        "extractor": f"{type(extractor).__module__}.{type(extractor).__qualname__}",
        "extractor_preprocessing": str(getattr(extractor, "preprocessing_version", "")),
        "state_dict_sha256": state_dict_hash(extractor),
        "dataset": dataset_name,
        "split": split,
        "size": len(dataset),
        "image_shape": list(dataset.image_shape),
        "pixels_dtype": str(pixels.dtype),
        "pixels_sha256": hashlib.sha256(pixels.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest(),
    }


def reference_statistics(dataset_name: str, split: str, extractor: nn.Module,
                         cache_dir: str | os.PathLike | None = None,
                         batch_size: int = 256, device: torch.device | str | None = None, progress: bool = False,
                         root: str | os.PathLike | None = None, refresh: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of a dataset split's features, cached in ``cache_dir`` (default :func:`default_cache_dir`).

    The file name holds the dataset, split and the first 16 hex digits of the key's SHA-256 (see
    :func:`statistics_key`); the full key is stored inside and checked on reading, so changed weights, data or
    preprocessing never reuse an old file. ``refresh=True`` recomputes. ``root`` is passed to ``load_dataset``.
    """
    from ..data import load_dataset

    if not isinstance(extractor, nn.Module):
        raise TypeError(f"reference_statistics needs an nn.Module extractor (its state_dict keys the cache), "
                        f"got {type(extractor).__name__}")
    dataset = load_dataset(dataset_name, split, root=root)
    key = statistics_key(dataset, dataset_name, split, extractor)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"{dataset_name}-{split}-{digest[:16]}.npz"
    if path.is_file() and not refresh:
        cached = _read_statistics(path, digest)
        if cached is not None:
            return cached
    mu, sigma = feature_statistics(extract_features(dataset, extractor, batch_size, device, progress))
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, mu=mu, sigma=sigma, digest=np.array(digest), key=np.array(json.dumps(key, sort_keys=True)))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return mu, sigma


def _read_statistics(path: Path, digest: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["digest"]) != digest:
                return None
            return data["mu"], data["sigma"]
    except (OSError, KeyError, ValueError):  # unreadable or foreign file: recompute and overwrite
        return None


# --------------------------------------------------------------------------- helpers


def _as_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.double() if not x.is_floating_point() or x.dtype == torch.bfloat16 else x
        return x.numpy()
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    return x


def _vector(x, name: str) -> np.ndarray:
    v = _as_array(x, name).astype(np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be a vector (D,), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or inf")
    return v


def _covariance(x, name: str) -> np.ndarray:
    s = _as_array(x, name).astype(np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"{name} must be a square matrix (D, D), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains NaN or inf")
    scale = float(np.max(np.abs(s))) if s.size else 0.0
    asymmetry = float(np.max(np.abs(s - s.T))) if s.size else 0.0
    if asymmetry > SYMMETRY_TOLERANCE * scale:
        raise ValueError(f"{name} is not symmetric (max |S - S^T| = {asymmetry:.3g}, max |S| = {scale:.3g})")
    return (s + s.T) / 2


def _as_statistics(reference) -> tuple[np.ndarray, np.ndarray] | None:
    """(mu, sigma) if ``reference`` is precomputed statistics, else None (it is images)."""
    if isinstance(reference, dict) and "mu" in reference and "sigma" in reference:
        return _vector(reference["mu"], "mu"), _covariance(reference["sigma"], "sigma")
    if isinstance(reference, (tuple, list)) and len(reference) == 2:
        a, b = reference
        if np.ndim(a) == 1 and np.ndim(b) == 2:
            return _vector(a, "mu"), _covariance(b, "sigma")
    return None


def _num_images(images) -> int | None:
    try:
        return len(images)
    except TypeError:
        return None


def _batches(images, batch_size: int) -> Iterator[torch.Tensor]:
    from ..data import ImageDataset

    if isinstance(images, ImageDataset):
        for start in range(0, len(images), batch_size):
            yield images[torch.arange(start, min(start + batch_size, len(images)))][0]
        return
    if isinstance(images, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(images)
        _check_batch(x)
        for start in range(0, len(x), batch_size):
            yield _to_float(x[start:start + batch_size])
        return
    if not isinstance(images, Iterable):
        raise TypeError(f"images must be a tensor (N, C, H, W), an ImageDataset or an iterable of batches, "
                        f"got {type(images).__name__}")
    for batch in images:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        batch = torch.as_tensor(batch)
        _check_batch(batch, hint=" (an iterable must yield batches, e.g. a DataLoader, not single images)")
        yield _to_float(batch)


def _check_batch(x: torch.Tensor, hint: str = "") -> None:
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}{hint}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"expected float images in [-1, 1] or uint8 0..255, got dtype {x.dtype}")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf")


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x
