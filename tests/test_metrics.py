"""The digits feature network, label accuracy, improved precision/recall and bits/dim."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from script_modules import load_script  # tests/script_modules.py

from ddpm_lite import GaussianDiffusion, get_betas
from ddpm_lite.data import load_dataset
from ddpm_lite.metrics import (
    DigitsFeatureNet,
    bits_per_dim,
    digits_feature_net_note,
    extract_features,
    label_accuracy,
    load_digits_feature_net,
    precision_recall,
)
from ddpm_lite.metrics.features import DIGITS_CHECKPOINT

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the digits feature network


def test_shipped_digits_net_is_small_and_loads_weights_only():
    assert DIGITS_CHECKPOINT.stat().st_size <= 1_000_000
    checkpoint = torch.load(DIGITS_CHECKPOINT, map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"format", "config", "state_dict"}
    net = load_digits_feature_net()
    assert isinstance(net, DigitsFeatureNet) and not net.training
    assert sum(p.numel() for p in net.parameters()) == digits_feature_net_note()["parameters"]


def test_shipped_digits_net_test_accuracy_at_least_97_percent():
    net = load_digits_feature_net()
    note = digits_feature_net_note()
    for name, key in (("digits", "test_accuracy"), ("digits16", "test_accuracy_digits16")):
        test = load_dataset(name, "test")
        accuracy = label_accuracy(test.images, test.labels, net)
        assert accuracy >= 0.97, name
        assert accuracy == pytest.approx(note[key], abs=1e-6)  # the recorded number is the shipped net's
    assert "tools/train_digits_features.py" in note["command"] and "--seed 0" in note["command"]
    test = load_dataset("digits", "test")
    assert label_accuracy(test.images, test.labels) == pytest.approx(note["test_accuracy"], abs=1e-6)  # default


def test_digits_features_are_64_dimensional_for_8x8_and_16x16():
    net = load_digits_feature_net()
    test8, test16 = load_dataset("digits", "test"), load_dataset("digits16", "test")
    f8, f16 = extract_features(test8, net), extract_features(test16, net)
    assert f8.shape == f16.shape == (360, 64)
    assert np.linalg.matrix_rank(f8 - f8.mean(0)) == 64
    assert np.abs(f8 - f16).mean() < 0.1 * np.abs(f8).mean()  # 16x16 is area-downsampled to about the 8x8
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 8x8"):
        net(torch.zeros(2, 1, 4, 4))


def test_label_accuracy_of_any_classifier():
    test = load_dataset("digits", "test")
    def always_three(x):
        return torch.nn.functional.one_hot(torch.full((len(x),), 3), 10).float()

    assert label_accuracy(test.images, test.labels, always_three) == pytest.approx((test.labels == 3).double().mean())
    assert label_accuracy(test.images[:10], torch.full((10,), 3), always_three, batch_size=3) == 1.0
    wrong = (test.labels + 1) % 10
    assert label_accuracy(test.images, wrong) < 0.05
    with pytest.raises(ValueError, match="N >= 1 labels"):
        label_accuracy(test.images, test.labels[:5])
    with pytest.raises(ValueError, match="integers"):
        label_accuracy(test.images, test.labels.float())


def test_training_script_is_deterministic(tmp_path):
    script = load_script("tools/train_digits_features.py")
    notes = [script.main(["--epochs", "1", "--out", str(tmp_path / f"run{i}" / "net.pt")]) for i in range(2)]
    assert notes[0]["sha256"] == notes[1]["sha256"]
    note = json.loads((tmp_path / "run0" / "net.json").read_text())
    assert note["seed"] == 0 and 0 <= note["test_accuracy"] <= 1
    load_digits_feature_net(tmp_path / "run0" / "net.pt")


# --------------------------------------------------------------------------- precision and recall


ANGLES = 2 * np.pi * np.arange(10) / 10
CENTRES = 50 * np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)  # ten 2-D modes, 31 apart


def modes(rng, n_per_mode, which):
    """``n_per_mode`` points of unit spread around each centre in ``which``."""
    return np.concatenate([CENTRES[m] + rng.normal(size=(n_per_mode, 2)) for m in which])


def brute_force_precision_recall(real, fake, k):
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def inside(points, centres, r):
        d = np.linalg.norm(points[:, None] - centres[None], axis=-1)
        return np.mean((d <= r[None]).any(axis=1))

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def test_precision_recall_identical_and_disjoint_sets():
    rng = np.random.default_rng(0)
    real = modes(rng, 30, range(10))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    duplicated = np.concatenate([real, real, real, real])  # radius 0 for every point: still inside
    assert precision_recall(duplicated, duplicated) == (1.0, 1.0)
    assert precision_recall(real, real + 1e4) == (0.0, 0.0)


def test_precision_recall_with_half_the_modes():
    real = modes(np.random.default_rng(1), 100, range(10))
    subset = real[: 5 * 100]  # the real points of modes 0..4
    assert precision_recall(real, subset) == (1.0, 0.5)
    fresh = modes(np.random.default_rng(2), 100, range(5))  # new samples of modes 0..4
    precision, recall = precision_recall(real, fresh, k=3)
    assert precision > 0.95 and 0.45 < recall <= 0.5  # k-NN balls miss a few new points at the edges


def test_precision_recall_matches_brute_force():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(120, 6)), rng.normal(size=(90, 6)) * 1.3 + 0.4
    for k in (1, 3, 5):
        expected = brute_force_precision_recall(real, fake, k)
        got = precision_recall(torch.from_numpy(real).float().double(), fake, k=k, batch_size=7)
        assert got == pytest.approx(expected, abs=1e-12)
        assert any(0 < v < 1 for v in got)  # not a trivial case


def test_precision_recall_bad_input():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="1 <= k"):
        precision_recall(x, x, k=10)
    with pytest.raises(ValueError, match="feature sizes disagree"):
        precision_recall(x, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="NaN"):
        precision_recall(x, np.full((10, 3), np.nan))


# --------------------------------------------------------------------------- bits/dim


class KnowsX0:
    """A perfect eps-prediction model of each image: it is told x_0 through model_kwargs."""

    def __init__(self, diffusion):
        self.ab = torch.from_numpy(diffusion.alphas_cumprod).float()

    def __call__(self, x_t, t, x0):
        ab = self.ab[t].reshape(-1, *[1] * (x_t.ndim - 1))
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def test_bits_per_dim_of_a_perfect_model_of_point_masses():
    """The KL terms vanish, so the total is the prior term plus the decoder NLL, whatever the batching."""
    d = GaussianDiffusion(get_betas("cosine", 50))
    x0 = torch.randint(0, 256, (5, 1, 2, 2), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1
    model = KnowsX0(d)
    out = bits_per_dim(d, model, x0, batch_size=2, model_kwargs_fn=lambda i: {"x0": x0[i]}, progress=True)
    direct = d.calc_bpd_loop(model, x0, model_kwargs={"x0": x0})
    assert out["num_images"] == 5 and out["total_bpd"].shape == (5,) and out["vb"].shape == (50,)
    assert torch.allclose(out["total_bpd"], direct["total_bpd"].double(), atol=1e-5)
    assert np.abs(out["vb"][1:]).max() < 1e-4
    assert out["mean"] == pytest.approx(direct["total_bpd"].double().mean().item(), abs=1e-5)
    assert out["prior_bpd"] == pytest.approx(direct["prior_bpd"].double().mean().item(), rel=1e-6)
    assert out["decoder_bpd"] == pytest.approx(direct["vb"][:, 0].double().mean().item(), rel=1e-5)
    assert out["mean"] == pytest.approx(out["prior_bpd"] + out["decoder_bpd"] + out["kl_bpd"], rel=1e-6)  # float32 sums
    assert out["stderr"] == pytest.approx(out["total_bpd"].std().item() / math.sqrt(5), rel=1e-12)


def test_bits_per_dim_equals_calc_bpd_loop_with_the_same_noise():
    torch.manual_seed(0)
    d = GaussianDiffusion(get_betas("cosine", 20), var_type="fixed_large")
    test = load_dataset("digits", "test")
    images = test.images[:6]
    def model(x, t):  # an imperfect model: every term counts
        return 0.3 * x

    out = bits_per_dim(d, model, images, batch_size=6, progress=False, generator=torch.Generator().manual_seed(5))
    direct = d.calc_bpd_loop(model, images, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out["total_bpd"], direct["total_bpd"].double())
    np.testing.assert_allclose(out["vb"], direct["vb"].double().mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["mse"], direct["mse"].double().mean(0).numpy(), rtol=1e-6)
    from_dataset = bits_per_dim(d, model, test, batch_size=4, progress=False)
    assert from_dataset["num_images"] == 360 and from_dataset["stderr"] > 0
