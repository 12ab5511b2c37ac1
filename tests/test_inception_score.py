"""Inception Score against a direct float64 computation and its published properties; the digits IS."""
import math

import numpy as np
import pytest
import torch

from ddpm_lite.data import load_dataset
from ddpm_lite.metrics import (
    InceptionV3Features,
    WeightsNotFoundError,
    class_logits,
    inception_score,
    inception_score_from_logits,
    inception_score_from_probs,
    inception_score_splits,
    load_digits_feature_net,
)


def direct_inception_score(logits, split_size):
    """Loops over images and classes with math.fsum, as the formula reads: for each consecutive split,
    exp(mean_i sum_y p(y|x_i) (log p(y|x_i) - log p(y))), p(y) the split's mean; then the mean over splits."""
    logits = np.asarray(logits, dtype=np.float64)
    scores = []
    for start in range(0, len(logits), split_size):
        part = logits[start:start + split_size]
        probs = []
        for row in part:
            m = max(row)
            z = math.fsum(math.exp(v - m) for v in row)
            probs.append([math.exp(v - m) / z for v in row])
        k = len(probs[0])
        marginal = [math.fsum(p[y] for p in probs) / len(probs) for y in range(k)]
        kls = [math.fsum(p[y] * (math.log(p[y]) - math.log(marginal[y])) for y in range(k) if p[y] > 0)
               for p in probs]
        scores.append(math.exp(math.fsum(kls) / len(kls)))
    return math.fsum(scores) / len(scores)


@pytest.mark.parametrize("split_size", [5, 7, 23, 5000])
def test_against_direct_float64_computation(split_size):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(23, 6))
    expected = direct_inception_score(logits, split_size)
    assert inception_score_from_logits(logits, split_size) == pytest.approx(expected, rel=1e-12)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert inception_score_from_probs(probs, split_size) == pytest.approx(expected, rel=1e-12)
    assert inception_score_from_logits(torch.from_numpy(logits).float(), split_size) == pytest.approx(expected,
                                                                                                      rel=1e-5)
    splits = inception_score_splits(logits, split_size)
    assert len(splits) == math.ceil(23 / split_size)  # consecutive splits; the last one holds the rest
    assert splits.mean() == pytest.approx(expected, rel=1e-12)
    assert splits[0] == pytest.approx(direct_inception_score(logits[:split_size], split_size), rel=1e-12)


def test_is_one_when_every_prediction_is_the_same():
    rng = np.random.default_rng(1)
    row = rng.normal(size=8)
    assert inception_score_from_logits(np.tile(row, (50, 1))) == pytest.approx(1.0, abs=1e-12)
    assert inception_score_from_probs(np.full((9, 4), 0.25)) == pytest.approx(1.0, abs=1e-12)


def test_is_the_number_of_classes_for_confident_balanced_predictions():
    k = 10
    one_hot = np.eye(k)[np.arange(200) % k]  # every class equally often in each split of 100 or 200
    assert inception_score_from_probs(one_hot) == pytest.approx(k, rel=1e-12)
    assert inception_score_from_probs(one_hot, split_size=100) == pytest.approx(k, rel=1e-12)
    assert inception_score_from_logits(60.0 * one_hot) == pytest.approx(k, rel=1e-9)  # softmax ~ one-hot
    # confident but unbalanced: exp(H(p(y))), the exponential of the entropy of the class frequencies
    freq = np.array([0.5, 0.25, 0.25])
    labels = np.repeat([0, 1, 2], (40, 20, 20))
    expected = math.exp(-(freq * np.log(freq)).sum())
    assert inception_score_from_probs(np.eye(3)[labels]) == pytest.approx(expected, rel=1e-12)


def test_is_between_one_and_the_number_of_classes():
    rng = np.random.default_rng(2)
    for k in (2, 5, 1000):
        for scale in (0.1, 3.0, 30.0):
            score = inception_score_from_logits(rng.normal(scale=scale, size=(64, k)))
            assert 1.0 <= score <= k


def test_invariant_to_the_order_of_images_within_a_split():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2.0, size=(30, 5))
    base = inception_score_from_logits(logits, split_size=10)
    shuffled = logits.copy()
    for start in (0, 10, 20):
        shuffled[start:start + 10] = shuffled[start:start + 10][rng.permutation(10)]
    assert inception_score_from_logits(shuffled, split_size=10) == pytest.approx(base, rel=1e-13)
    assert inception_score_from_logits(logits[::-1], split_size=30) == pytest.approx(
        inception_score_from_logits(logits, split_size=30), rel=1e-13)


def test_bad_input_raises_one_clear_value_error():
    with pytest.raises(ValueError, match=r"matrix \(N images, K classes\)"):
        inception_score_from_logits(np.zeros(5))
    with pytest.raises(ValueError, match="NaN or inf"):
        inception_score_from_logits(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="split_size must be a positive integer"):
        inception_score_from_logits(np.zeros((4, 2)), split_size=0)
    with pytest.raises(ValueError, match=">= 0"):
        inception_score_from_probs(np.array([[1.5, -0.5]]))
    with pytest.raises(ValueError, match="must sum to 1"):
        inception_score_from_probs(np.array([[0.2, 0.2]]))


def test_digits_inception_score_of_real_and_blank_images():
    net = load_digits_feature_net()
    test = load_dataset("digits", "test")
    logits = class_logits(test.images, net)
    with torch.no_grad():
        direct = net.logits(test.images).double().numpy()
    np.testing.assert_allclose(logits, direct, rtol=1e-5, atol=1e-5)
    real = inception_score(test.images)  # default classifier: the shipped digits network
    assert real == pytest.approx(direct_inception_score(direct, 5000), rel=1e-5)
    assert 5.0 < real <= 10.0
    blank = inception_score(torch.full((40, 1, 8, 8), -1.0), net)
    assert blank == pytest.approx(1.0, abs=1e-6)  # one image repeated: no information about the class
    # any callable returning logits, and a module without a `logits` method
    assert inception_score(test.images, lambda x: net.logits(x)) == pytest.approx(real, rel=1e-6)
    assert inception_score(test.images, torch.nn.Sequential(net, net.head)) == pytest.approx(real, rel=1e-6)


def test_inception_v3_offline_is_the_same_clear_error_as_fid(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="inception_v3_google-0cc3c7bd.pth"):
        inception_score(torch.zeros(4, 3, 8, 8), InceptionV3Features(download=False))
