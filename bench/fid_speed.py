"""Speed and accuracy of ``frechet_distance`` against pytorch-fid's ``scipy.linalg.sqrtm`` and an eigh form.

    OMP_NUM_THREADS=1 python bench/fid_speed.py                      # dims 64 512 2048, accuracy at 64
    OMP_NUM_THREADS=1 python bench/fid_speed.py --accuracy-dims 64 128 --repeats 5

Three ways to get tr sqrt(S1 S2), all fed the same float64 statistics:

* **ours** -- ``ddpm_lite.metrics.frechet_distance``: the nuclear norm of A^T B with S1 = A A^T, S2 = B B^T
  (pivoted Cholesky factors, singular values by LAPACK gesdd);
* **scipy** -- as pytorch-fid: ``scipy.linalg.sqrtm(S1 @ S2)``, retried with 1e-6 added to the diagonals if
  not finite, real part of the trace;
* **eigh** -- a plain symmetric eigendecomposition: ``eigvalsh(sqrt(S1) S2 sqrt(S1))`` with sqrt(S1) from eigh,
  eigenvalues clipped at 0, sum of their square roots.

Speed: the minimum over ``--repeats`` runs (a shared machine is noisy), on full-rank statistics of random
correlated features. Accuracy: significant digits of the FID, -log10(|FID - ref| / ref), against a 40-digit
mpmath reference computed from the same float64 statistics (the factor of a positive definite sigma by mpmath's
Cholesky, then the eigenvalues of L^T S_other L by mpmath's eigsy; tiny negative eigenvalues of singular
statistics are clipped at 0). mpmath is too slow beyond ~128 dimensions, so accuracy is measured at
``--accuracy-dims`` only, on full-rank and rank-deficient cases, and on the digits features of the shipped
network (test split against train split).
"""
from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np
import scipy.linalg

from ddpm_lite.metrics.fid import feature_statistics, frechet_distance

# --------------------------------------------------------------------------- the three methods


def fid_ours(mu1, s1, mu2, s2) -> float:
    return frechet_distance(mu1, s1, mu2, s2)


def fid_scipy(mu1, s1, mu2, s2) -> float:
    """pytorch-fid's recipe (calculate_frechet_distance), written out here."""
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * 1e-6
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def fid_eigh(mu1, s1, mu2, s2) -> float:
    diff = mu1 - mu2
    lam, u = np.linalg.eigh(s1)
    root = (u * np.sqrt(np.clip(lam, 0, None))) @ u.T
    ev = np.linalg.eigvalsh(root @ s2 @ root)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


METHODS = {"ours": fid_ours, "scipy": fid_scipy, "eigh": fid_eigh}


# --------------------------------------------------------------------------- the mpmath reference


def mp_trace_sqrt(s1: np.ndarray, s2: np.ndarray, dps: int = 40):
    """tr sqrt(S1 S2) in ``dps``-digit arithmetic, from the float64 matrices as given (an mpmath mpf)."""
    import mpmath as mp

    with mp.workdps(dps):
        m1, m2 = mp.matrix(s1.tolist()), mp.matrix(s2.tolist())
        for p, q in ((m2, m1), (m1, m2)):  # S1 S2 ~ L^T S_other L with S_pd = L L^T (exact, in dps digits)
            try:
                lower = mp.cholesky(p)
            except ValueError:  # not positive definite in float64: try the other one
                continue
            ev = mp.eigsy(lower.T * q * lower, eigvals_only=True)
            break
        else:  # both singular: sqrt(S1) from eigsy, eigenvalues clipped at 0
            lam, u = mp.eigsy(m1)
            root = u * mp.diag([mp.sqrt(max(x, 0)) for x in lam]) * u.T
            ev = mp.eigsy(root * m2 * root, eigvals_only=True)
        return mp.fsum(mp.sqrt(x) for x in ev if x > 0)


def mp_fid(mu1, s1, mu2, s2, dps: int = 40):
    import mpmath as mp

    with mp.workdps(dps):
        diff = [mp.mpf(a) - mp.mpf(b) for a, b in zip(mu1.tolist(), mu2.tolist())]
        terms = [mp.fsum(x * x for x in diff), mp.fsum(map(mp.mpf, np.diag(s1).tolist())),
                 mp.fsum(map(mp.mpf, np.diag(s2).tolist())), -2 * mp_trace_sqrt(s1, s2, dps)]
        return mp.fsum(terms)


def significant_digits(value: float, reference) -> float:
    error = abs(value - float(reference)) / abs(float(reference))
    return 16.0 if error == 0 else min(16.0, -math.log10(error))


# --------------------------------------------------------------------------- cases


def random_features(rng, n: int, d: int, rank: int | None = None, shift: float = 0.0) -> np.ndarray:
    """n correlated Gaussian features in d dimensions (spanning ``rank`` of them if given)."""
    r = rank or d
    mix = rng.normal(size=(r, d)) / math.sqrt(r)
    return rng.normal(size=(n, r)) @ mix + shift


def accuracy_cases(d: int, seed: int = 0):
    """(name, features1, features2): full rank, fewer samples than dims, low rank, dead features."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(d, d)) / math.sqrt(d)
    w2 = w1 + 0.5 * rng.normal(size=(d, d)) / math.sqrt(d)
    yield "full rank (n = 8d)", rng.normal(size=(8 * d, d)) @ w1 + 0.3, rng.normal(size=(8 * d, d)) @ w2
    n = d * 5 // 8
    yield f"n < d (n = {n})", rng.normal(size=(n, d)) @ w1, rng.normal(size=(8 * d, d)) @ w2
    r = d - d // 8
    basis = rng.normal(size=(r, d)) / math.sqrt(r)
    yield (f"rank {r} of {d} (both)", rng.normal(size=(8 * d, r)) @ basis,
           rng.normal(size=(8 * d, r)) @ (basis + 0.3 * rng.normal(size=(r, d)) / math.sqrt(r)))
    dead1, dead2 = np.maximum(rng.normal(size=(8 * d, d)) @ w1, 0), np.maximum(rng.normal(size=(8 * d, d)) @ w2, 0)
    dead1[:, : d // 8] = 0
    dead2[:, : d // 8] = 0
    yield f"ReLU, {d // 8} dead features", dead1, dead2


def digits_cases():
    """Digits features of the shipped network: test vs train (full rank), 40 test images vs train (rank 39)."""
    from ddpm_lite.data import load_dataset
    from ddpm_lite.metrics import extract_features, load_digits_feature_net

    net = load_digits_feature_net()
    train = extract_features(load_dataset("digits", "train"), net).astype(np.float64)
    test = extract_features(load_dataset("digits", "test"), net).astype(np.float64)
    yield "digits features, test vs train", test, train
    yield "digits features, 40 test vs train", test[:40], train


# --------------------------------------------------------------------------- main


def best_time(fn, *args, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 512, 2048])
    parser.add_argument("--accuracy-dims", type=int, nargs="*", default=[64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-digits", action="store_true", help="skip the digits-features accuracy cases")
    args = parser.parse_args(argv)

    cases = [(d, c) for d in args.accuracy_dims for c in accuracy_cases(d)]
    if not args.no_digits:
        cases += [(64, c) for c in digits_cases()]
    if cases:
        print("accuracy: significant digits of FID vs a 40-digit mpmath reference (16 = exact)")
        print(f"{'case':38s} {'dims':>5s} {'rank':>9s} {'FID':>12s} {'ours':>6s} {'scipy':>6s} {'eigh':>6s}  ref s")
    for d, (name, f1, f2) in cases:
        mu1, s1 = feature_statistics(f1)
        mu2, s2 = feature_statistics(f2)
        start = time.perf_counter()
        ref = mp_fid(mu1, s1, mu2, s2)
        ref_seconds = time.perf_counter() - start
        ranks = f"{np.linalg.matrix_rank(s1)},{np.linalg.matrix_rank(s2)}"
        digits = [significant_digits(fn(mu1, s1, mu2, s2), ref) for fn in METHODS.values()]
        print(f"{name:38s} {d:5d} {ranks:>9s} {float(ref):12.6g} " + " ".join(f"{x:6.1f}" for x in digits)
              + f"  {ref_seconds:5.1f}", flush=True)

    print(f"\nspeed: seconds, min of {args.repeats}, full-rank statistics, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"{'dims':>5s} {'ours':>9s} {'scipy':>9s} {'eigh':>9s} {'scipy/ours':>11s} {'|ours-scipy|/ours':>18s}")
    rng = np.random.default_rng(1)
    for d in args.dims:
        mu1, s1 = feature_statistics(random_features(rng, 2 * d, d))
        mu2, s2 = feature_statistics(random_features(rng, 2 * d, d, shift=0.1))
        times = {k: best_time(fn, mu1, s1, mu2, s2, repeats=args.repeats) for k, fn in METHODS.items()}
        ours, theirs = fid_ours(mu1, s1, mu2, s2), fid_scipy(mu1, s1, mu2, s2)
        print(f"{d:5d} {times['ours']:9.4f} {times['scipy']:9.4f} {times['eigh']:9.4f} "
              f"{times['scipy'] / times['ours']:10.1f}x {abs(ours - theirs) / ours:18.1e}", flush=True)


if __name__ == "__main__":
    main()
