"""Inception Score (Salimans et al. 2016), computed as the evaluator of "Diffusion Models Beat GANs" does.

For a classifier p(y | x) and images x_1..x_N::

    IS = exp( E_x KL(p(y | x) || p(y)) ),   p(y) = E_x p(y | x)

high when each image is classified confidently (low entropy of p(y | x)) and the classes are balanced (high entropy
of p(y)). It lies in [1, K] for K classes: 1 when every p(y | x) is the same, K when the predictions are one-hot and
every class is predicted equally often.

**Splits** (guided-diffusion's ``evaluations/evaluator.py``, ``compute_inception_score``): the images are cut, in
their order, into consecutive splits of ``split_size`` images (5000; the last split holds the rest), p(y) is the mean
over each split, and the score is the arithmetic mean of the splits' exp(mean KL). With fewer than ``split_size``
images there is one split. (The older improved-GAN code cuts into 10 splits and also reports their standard
deviation; the reference evaluator reports this mean only.) Here everything is computed in float64, from
log-probabilities (``log_softmax`` of logits, or the log of given probabilities, with 0 log 0 = 0).

The classifier of published numbers is the TensorFlow Inception graph; :class:`~.features.InceptionV3Features`
(torchvision's weights) and the digits network (:class:`~.features.DigitsFeatureNet`, 10 digit classes) give
scores comparable among runs of the same network only.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

DEFAULT_SPLIT_SIZE = 5000


def inception_score_from_logits(logits, split_size: int = DEFAULT_SPLIT_SIZE) -> float:
    """The Inception Score of class ``logits`` (N, K): the probabilities are ``softmax(logits)`` in float64."""
    return float(np.mean(_split_scores(_log_softmax(_matrix(logits, "logits")), split_size)))


def inception_score_from_probs(probs, split_size: int = DEFAULT_SPLIT_SIZE) -> float:
    """The Inception Score of class probabilities ``probs`` (N, K): each row >= 0 and summing to 1 (within 1e-4)."""
    probs = _matrix(probs, "probs")
    if (probs < 0).any():
        raise ValueError("probs must be probabilities (>= 0); pass logits to inception_score_from_logits")
    sums = probs.sum(axis=1)
    if np.abs(sums - 1).max() > 1e-4:
        raise ValueError(f"each row of probs must sum to 1, got sums in [{sums.min():.6g}, {sums.max():.6g}]; "
                         "pass logits to inception_score_from_logits")
    with np.errstate(divide="ignore"):
        log_probs = np.log(probs / sums[:, None])  # 0 -> -inf, weighted by 0 below
    return float(np.mean(_split_scores(log_probs, split_size)))


def inception_score_splits(logits, split_size: int = DEFAULT_SPLIT_SIZE) -> np.ndarray:
    """exp(mean KL) of each split of ``logits`` (N, K), in order: their mean is :func:`inception_score_from_logits`."""
    return _split_scores(_log_softmax(_matrix(logits, "logits")), split_size)


@torch.no_grad()
def class_logits(images, classifier, batch_size: int = 256, device=None, progress: bool = False) -> np.ndarray:
    """Logits (N, K) of ``images`` through ``classifier``: its ``logits`` method when it has one (the feature
    networks of :mod:`.features`), else the classifier itself (any module or callable returning logits).
    ``images`` take any form :func:`~.fid.extract_features` accepts."""
    from .fid import extract_features

    module = classifier if isinstance(classifier, nn.Module) else None
    method = getattr(classifier, "logits", None)
    if callable(method) and module is not None:
        return extract_features(images, _Logits(module), batch_size, device, progress)
    if callable(method):
        return extract_features(images, method, batch_size, device, progress)
    return extract_features(images, classifier, batch_size, device, progress)


def inception_score(images, classifier=None, split_size: int = DEFAULT_SPLIT_SIZE, batch_size: int = 256,
                    device=None, progress: bool = False) -> float:
    """The Inception Score of ``images`` (N, C, H, W) in [-1, 1] under ``classifier`` (default: the shipped digits
    network, :func:`~.features.load_digits_feature_net`, which gives the "digits IS" in [1, 10]). For the
    Inception-v3 score pass ``InceptionV3Features()``: offline without its weights file it raises
    :class:`~.features.WeightsNotFoundError` naming the file and where to put it."""
    if classifier is None:
        from .features import load_digits_feature_net

        classifier = load_digits_feature_net()
    return inception_score_from_logits(class_logits(images, classifier, batch_size, device, progress), split_size)


class _Logits(nn.Module):
    """A module whose forward is another module's ``logits``: extract_features then handles its eval mode (and
    restores the mode the network had, which this wrapper copies)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.training = net.training

    def forward(self, x):
        return self.net.logits(x)


def _matrix(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be a matrix (N images, K classes) with N, K >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _split_scores(log_probs: np.ndarray, split_size: int) -> np.ndarray:
    """exp(mean_x KL(p(y|x) || p(y))) of each consecutive split of ``split_size`` rows of log p(y|x)."""
    if isinstance(split_size, bool) or not isinstance(split_size, (int, np.integer)) or split_size < 1:
        raise ValueError(f"split_size must be a positive integer (images per split), got {split_size!r}")
    scores = []
    for start in range(0, len(log_probs), split_size):
        log_p = log_probs[start:start + split_size]
        p = np.exp(log_p)
        log_marginal = np.log(p.mean(axis=0))
        with np.errstate(invalid="ignore"):
            terms = np.where(p > 0, p * (log_p - log_marginal), 0.0)  # 0 log 0 = 0
        scores.append(np.exp(terms.sum(axis=1).mean()))
    return np.array(scores)
