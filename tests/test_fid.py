"""FID: the distance against 40-digit mpmath references, closed forms, bad input; features, caching, Inception.

The mpmath reference takes the float64 statistics as exact: tr sqrt(S1 S2) = sum sqrt(eig(L^T S_other L)) with
S_pd = L L^T by mpmath's Cholesky of a positive definite sigma (tiny negative eigenvalues clipped at 0). For
fid_from_features on singular statistics the reference is computed from the features themselves.
"""
import math
import time

import mpmath as mp
import numpy as np
import pytest
import torch
from torch import nn

from ddpm_lite.data import load_dataset
from ddpm_lite.metrics import (
    InceptionV3Features,
    WeightsNotFoundError,
    compute_fid,
    extract_features,
    feature_dim,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    load_digits_feature_net,
    psd_factor,
    reference_statistics,
    trace_sqrt_product,
)
from ddpm_lite.metrics import fid as fid_module

DPS = 40


# --------------------------------------------------------------------------- mpmath references


def mp_trace_sqrt(s1, s2):
    with mp.workdps(DPS):
        m1, m2 = mp.matrix(s1.tolist()), mp.matrix(s2.tolist())
        for p, q in ((m2, m1), (m1, m2)):
            try:
                lower = mp.cholesky(p)
            except ValueError:
                continue
            return mp.fsum(mp.sqrt(x) for x in mp.eigsy(lower.T * q * lower, eigvals_only=True) if x > 0)
        raise AssertionError("the tests give one positive definite sigma")


def mp_fid(mu1, s1, mu2, s2):
    with mp.workdps(DPS):
        diff2 = mp.fsum((mp.mpf(a) - mp.mpf(b)) ** 2 for a, b in zip(mu1.tolist(), mu2.tolist()))
        traces = mp.fsum(map(mp.mpf, np.diag(s1).tolist())) + mp.fsum(map(mp.mpf, np.diag(s2).tolist()))
        return diff2 + traces - 2 * mp_trace_sqrt(s1, s2)


def mp_fid_from_features(f1, f2):
    """The FID of two feature sets, every step from the float64 features in mpmath (f2 must have N > D)."""
    with mp.workdps(DPS):
        def centred(f):
            m = mp.matrix(f.tolist())
            mu = [mp.fsum(m[i, j] for i in range(m.rows)) / m.rows for j in range(m.cols)]
            for i in range(m.rows):
                for j in range(m.cols):
                    m[i, j] -= mu[j]
            return mu, m / mp.sqrt(m.rows - 1)

        (mu1, c1), (mu2, c2) = centred(f1), centred(f2)
        s2 = c2.T * c2
        g = c1 * mp.cholesky(s2)  # S1 = c1^T c1; L^T S1 L = g^T g has the eigenvalues of g g^T
        tr_sqrt = mp.fsum(mp.sqrt(x) for x in mp.eigsy(g * g.T, eigvals_only=True) if x > 0)
        tr1 = mp.fsum(c1[i, j] ** 2 for i in range(c1.rows) for j in range(c1.cols))
        tr2 = mp.fsum(s2[j, j] for j in range(s2.rows))
        return mp.fsum((a - b) ** 2 for a, b in zip(mu1, mu2)) + tr1 + tr2 - 2 * tr_sqrt


def digits_of(value, reference):
    error = abs(value - float(reference)) / abs(float(reference))
    return 16.0 if error == 0 else -math.log10(error)


def correlated(rng, n, d, mix=None, shift=0.0):
    mix = rng.normal(size=(d, d)) / math.sqrt(d) if mix is None else mix
    return rng.normal(size=(n, mix.shape[0])) @ mix + shift


@pytest.fixture(scope="module")
def digits_features():
    net = load_digits_feature_net()
    return (extract_features(load_dataset("digits", "train"), net).astype(np.float64),
            extract_features(load_dataset("digits", "test"), net).astype(np.float64))


# --------------------------------------------------------------------------- statistics


def test_feature_statistics_is_float64_mean_and_np_cov():
    rng = np.random.default_rng(0)
    f = (rng.normal(size=(300, 7)) * [1, 2, 3, 4, 5, 6, 7] + 100).astype(np.float32)
    mu, sigma = feature_statistics(torch.from_numpy(f))
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (7, 7)
    np.testing.assert_allclose(mu, f.astype(np.float64).mean(0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-11, atol=1e-13)
    np.testing.assert_array_equal(sigma, sigma.T)
    _, chunked = feature_statistics(f, chunk_size=7)
    np.testing.assert_allclose(chunked, sigma, rtol=1e-12)


# --------------------------------------------------------------------------- accuracy against mpmath


def test_full_rank_statistics_to_10_digits():
    rng = np.random.default_rng(1)
    d = 48
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    f1 = correlated(rng, 8 * d, d, mix, shift=0.3)
    f2 = correlated(rng, 8 * d, d, mix + 0.5 * rng.normal(size=(d, d)) / math.sqrt(d))
    stats = (*feature_statistics(f1), *feature_statistics(f2))
    ref = mp_fid(*stats)
    assert digits_of(frechet_distance(*stats), ref) >= 10
    assert digits_of(fid_from_features(f1, f2), ref) >= 10
    tr = mp_trace_sqrt(stats[1], stats[3])
    assert digits_of(trace_sqrt_product(stats[1], stats[3]), tr) >= 12


def test_fewer_samples_than_dimensions_to_8_digits():
    """S1 of 30 samples in 48 dimensions has rank 29: from the statistics 8 digits, from the features 12."""
    rng = np.random.default_rng(2)
    d = 48
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    f1 = correlated(rng, 30, d, mix)
    f2 = correlated(rng, 4 * d, d, mix + 0.5 * rng.normal(size=(d, d)) / math.sqrt(d))
    stats = (*feature_statistics(f1), *feature_statistics(f2))
    assert np.linalg.matrix_rank(stats[1]) == 29
    assert psd_factor(stats[1]).shape[1] < d  # the pivoted Cholesky stops in the null space
    assert digits_of(frechet_distance(*stats), mp_fid(*stats)) >= 8
    assert digits_of(fid_from_features(f1, f2), mp_fid_from_features(f1, f2)) >= 12


def test_digits_features_to_10_and_8_digits(digits_features):
    """The shipped network's 64-d features: test vs train (full rank), 40 test images vs train (rank 39)."""
    train, test = digits_features
    full = (*feature_statistics(test), *feature_statistics(train))
    assert digits_of(frechet_distance(*full), mp_fid(*full)) >= 10
    few = (*feature_statistics(test[:40]), *feature_statistics(train))
    assert np.linalg.matrix_rank(few[1]) == 39
    assert digits_of(frechet_distance(*few), mp_fid(*few)) >= 8


def test_low_rank_features_with_a_shared_null_space():
    """Dead features (always 0) leave exact zero rows and columns; the distance ignores them exactly."""
    rng = np.random.default_rng(3)
    f1, f2 = np.maximum(correlated(rng, 400, 24), 0), np.maximum(correlated(rng, 500, 24, shift=0.2), 0)
    f1[:, :4] = f2[:, :4] = 0
    full = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    live = frechet_distance(*feature_statistics(f1[:, 4:]), *feature_statistics(f2[:, 4:]))
    assert full == pytest.approx(live, rel=1e-13)


# --------------------------------------------------------------------------- closed forms and properties


def test_diagonal_covariances_closed_form():
    """Commuting covariances: tr sqrt(S1 S2) = sum sqrt(a_i b_i), so FID = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2."""
    rng = np.random.default_rng(4)
    a, b = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    q = np.linalg.qr(rng.normal(size=(20, 20)))[0]  # the same rotation of both keeps them commuting
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-13)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert frechet_distance(mu1, (s1 + s1.T) / 2, mu2, (s2 + s2.T) / 2) == pytest.approx(expected, rel=1e-12)


def test_identical_sets_give_zero_and_the_result_is_never_negative():
    rng = np.random.default_rng(5)
    for n, d in ((500, 32), (20, 32), (2, 5)):  # full rank, singular, rank 1
        f = correlated(rng, n, d) * 10
        mu, sigma = feature_statistics(f)
        value = frechet_distance(mu, sigma, mu, sigma)
        assert isinstance(value, float) and 0.0 <= value < 1e-8
        assert 0.0 <= fid_from_features(f, f) < 1e-8
    zero = np.zeros((3, 3))
    assert frechet_distance(np.ones(3), zero, np.zeros(3), zero) == 3.0


def test_scaling_and_symmetry():
    rng = np.random.default_rng(6)
    f1, f2 = correlated(rng, 200, 16), correlated(rng, 300, 16, shift=0.5)
    value = fid_from_features(f1, f2)
    assert fid_from_features(f2, f1) == pytest.approx(value, rel=1e-12)
    assert fid_from_features(3 * f1, 3 * f2) == pytest.approx(9 * value, rel=1e-12)
    assert fid_from_features(f1 + 7, f2 + 7) == pytest.approx(value, rel=1e-10)


@pytest.mark.parametrize("args,match", [
    ((np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)), "disagree in dimension"),
    ((np.zeros(3), np.ones((3, 4)), np.zeros(3), np.eye(3)), r"sigma1 must be a square matrix .*\(3, 4\)"),
    ((np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3)), r"mu1 must be a vector"),
    ((np.zeros(3), np.eye(3), np.zeros(3), np.full((3, 3), np.nan)), "sigma2 contains NaN"),
    ((np.array([0, np.nan, 0]), np.eye(3), np.zeros(3), np.eye(3)), "mu1 contains NaN"),
    ((np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2)), "sigma1 is not symmetric"),
    ((np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]), np.zeros(2), np.eye(2)), "not positive semidefinite"),
])
def test_bad_statistics_raise_clear_value_errors(args, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(*args)


def test_bad_features_raise_clear_value_errors():
    f = np.random.default_rng(7).normal(size=(10, 4))
    bad = f.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(rows \[3\]\)"):
        feature_statistics(bad)
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        feature_statistics(f[:1])
    with pytest.raises(ValueError, match=r"features must be a matrix \(N, D\)"):
        feature_statistics(f[0])
    with pytest.raises(ValueError, match="same D"):
        fid_from_features(f, f[:, :3])


# --------------------------------------------------------------------------- images -> features -> FID


class Recorder(nn.Module):
    """Flattens images through a fixed linear map and records the input shapes it saw."""

    def __init__(self, d_in=64, d_out=6):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return torch.tanh(self.linear(x.flatten(1)))


def test_compute_fid_accepts_tensors_datasets_loaders_and_statistics():
    torch.manual_seed(0)
    extractor = Recorder().train()
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    f_train = extract_features(train.images, extractor, batch_size=500)
    assert f_train.shape == (len(train), 6) and extractor.training  # eval inside, mode restored after
    assert {s[0] for s in extractor.shapes} == {500, 437}
    expected = fid_from_features(extract_features(test.images, extractor), f_train)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(test.images, test.labels), batch_size=50)
    assert compute_fid(test.images, train, extractor) == pytest.approx(expected, rel=1e-12)
    assert compute_fid(loader, train.images, extractor, batch_size=64) == pytest.approx(expected, rel=1e-12)
    assert compute_fid(test, feature_statistics(f_train), extractor) == pytest.approx(expected, rel=1e-12)
    mu, sigma = feature_statistics(f_train)
    assert compute_fid(test, {"mu": mu, "sigma": sigma}, extractor) == pytest.approx(expected, rel=1e-12)
    uint8 = ((test.images + 1) * 127.5).round().to(torch.uint8)
    as_float = uint8.float() / 127.5 - 1  # uint8 is read as in ddpm_lite.data
    assert compute_fid(uint8, train, extractor) == compute_fid(as_float, train, extractor)
    with pytest.raises(ValueError, match="64 dimensions, the extractor gives 6"):
        compute_fid(test, feature_statistics(np.random.default_rng(0).normal(size=(100, 64))), extractor)
    with pytest.raises(ValueError, match="not single images"):
        extract_features(iter(test.images), extractor)
    with pytest.raises(ValueError, match="NaN"):
        extract_features(torch.full((2, 1, 8, 8), float("nan")), extractor)


def test_feature_dim_without_a_299_probe():
    extractor = Recorder(256, 5)
    assert feature_dim(extractor, (1, 16, 16)) == 5
    assert extractor.shapes == [(2, 1, 16, 16)]  # the real input size
    assert feature_dim(load_digits_feature_net(), (1, 8, 8)) == 64
    assert InceptionV3Features.feature_dim == 2048


def test_reference_statistics_cache_is_keyed_by_weights_and_data(tmp_path, monkeypatch):
    torch.manual_seed(0)
    extractor = Recorder()
    calls = []
    real_extract = fid_module.extract_features
    monkeypatch.setattr(fid_module, "extract_features", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
    mu, sigma = reference_statistics("digits", "train", extractor, tmp_path)
    expected = feature_statistics(real_extract(load_dataset("digits", "train"), extractor))
    np.testing.assert_array_equal(mu, expected[0])
    np.testing.assert_array_equal(sigma, expected[1])
    again = reference_statistics("digits", "train", extractor, tmp_path)
    assert len(calls) == 1 and np.array_equal(again[1], sigma)  # read from the cache
    reference_statistics("digits", "test", extractor, tmp_path)  # another split: another file
    assert len(calls) == 2 and len(list(tmp_path.glob("*.npz"))) == 2
    with torch.no_grad():
        extractor.linear.bias[0] += 1e-3  # changed weights: a new key, never the stale file
    changed = reference_statistics("digits", "train", extractor, tmp_path)
    assert len(calls) == 3 and not np.array_equal(changed[0], mu)
    monkeypatch.setattr(fid_module, "PREPROCESSING_VERSION", fid_module.PREPROCESSING_VERSION + 1)
    reference_statistics("digits", "train", extractor, tmp_path)
    assert len(calls) == 4
    for path in tmp_path.glob("*.npz"):
        path.write_bytes(b"not an npz")  # a corrupt file is recomputed and replaced
    reference_statistics("digits", "train", extractor, tmp_path)
    assert len(calls) == 5
    reference_statistics("digits", "train", extractor, tmp_path)
    assert len(calls) == 5
    with pytest.raises(TypeError, match="nn.Module"):
        reference_statistics("digits", "train", lambda x: x.flatten(1), tmp_path)


def test_state_dict_hash_sees_every_weight():
    net = load_digits_feature_net()
    before = fid_module.state_dict_hash(net)
    assert before == fid_module.state_dict_hash(load_digits_feature_net())
    with torch.no_grad():
        net.head.bias[3] = torch.nextafter(net.head.bias[3], torch.tensor(1.0))
    assert fid_module.state_dict_hash(net) != before


# --------------------------------------------------------------------------- Inception-v3


def test_inception_offline_fails_fast_and_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as err:
        InceptionV3Features(connect_timeout=3.0)
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "inception_v3_google-0cc3c7bd.pth" in message and str(checkpoints) in message
    assert "torch.hub.get_dir()/checkpoints" in message
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="download=False"):
        InceptionV3Features(download=False)
    assert time.perf_counter() - start < 5
    checkpoints.mkdir(parents=True)
    (checkpoints / "inception_v3_google-0cc3c7bd.pth").write_bytes(b"truncated download")
    with pytest.raises(WeightsNotFoundError, match="unreadable"):
        InceptionV3Features()


def test_inception_wrapper_gives_2048_features():
    """Random weights (weights=None): the shape, the grayscale path and the eval mode of the real wrapper."""
    torch.manual_seed(0)
    net = InceptionV3Features(weights=None).train()
    assert not net.training and not net.net.training
    assert isinstance(net.net.fc, nn.Identity)
    gray = torch.rand(2, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        out = net(gray)
        rgb = net(gray.expand(-1, 3, -1, -1))
    assert out.shape == (2, 2048) and torch.isfinite(out).all()
    assert torch.equal(out, rgb)
    with pytest.raises(ValueError, match=r"\(B, 1 or 3, H, W\)"):
        net(torch.zeros(2, 2, 8, 8))
