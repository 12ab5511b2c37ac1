"""The table of the reference evaluator: FID, sFID, Inception Score, precision and recall of a set of samples.

guided-diffusion's ``evaluations/evaluator.py`` (the numbers of "Diffusion Models Beat GANs") runs the samples and
a reference batch through Inception-v3 once and reports, from the same pass:

* **FID** between the pool features of the samples and of the reference (:func:`~.fid.fid_from_features`);
* **sFID** (Nash et al. 2021): the same distance between *spatial* features, the first 7 channels of an
  intermediate feature map, flattened (see :mod:`.features`), which also see where things are in the image;
* **Inception Score** of the samples alone, in splits of 5000 (:mod:`.inception_score`);
* **precision** and **recall** (Kynkäänniemi et al. 2019, k = 3) of the pool features
  (:func:`~.precision_recall.precision_recall`).

:func:`evaluate_samples` does the same with any feature network that has ``evaluation_features`` (or ``forward``,
``spatial_features`` and ``logits``): the shipped digits network by default, or
:class:`~.features.InceptionV3Features`. The metrics a network cannot give (no spatial map, no classifier head)
are ``None``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .fid import extract_features, fid_from_features
from .inception_score import DEFAULT_SPLIT_SIZE, inception_score_from_logits
from .precision_recall import precision_recall


@dataclass(frozen=True)
class EvaluationFeatures:
    """What the evaluator needs of one image set: ``pool`` (N, D) features, ``spatial`` (N, S) features and class
    ``logits`` (N, K); the last two are None when the network has no such output."""

    pool: np.ndarray
    spatial: np.ndarray | None
    logits: np.ndarray | None

    def __len__(self) -> int:
        return len(self.pool)


class _AllOutputs(nn.Module):
    """One pass of ``net`` giving its pool, spatial and logit outputs concatenated (for extract_features)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.sizes: tuple[int, int, int] | None = None
        self.training = isinstance(net, nn.Module) and net.training  # extract_features restores this mode

    def forward(self, x):
        net = self.net
        if callable(getattr(net, "evaluation_features", None)):
            pool, spatial, logits = net.evaluation_features(x)
        else:
            pool = net(x)
            spatial = net.spatial_features(x) if callable(getattr(net, "spatial_features", None)) else None
            logits = net.logits(x) if callable(getattr(net, "logits", None)) else None
        parts = [t.reshape(len(x), -1) if t is not None else x.new_zeros(len(x), 0) for t in (pool, spatial, logits)]
        self.sizes = tuple(p.shape[1] if t is not None else -1 for p, t in zip(parts, (pool, spatial, logits)))
        return torch.cat([p.float() for p in parts], dim=1)


def evaluation_features(images, feature_net, batch_size: int = 256, device=None,
                        progress: bool = False) -> EvaluationFeatures:
    """Pool features, spatial features and logits of ``images`` (any form :func:`~.fid.extract_features` takes)
    through ``feature_net``, in one pass per batch."""
    wrapper = _AllOutputs(feature_net)
    everything = extract_features(images, wrapper, batch_size, device, progress)
    pool_size, spatial_size, logit_size = wrapper.sizes
    pool = everything[:, :pool_size]
    rest = everything[:, pool_size:]
    spatial = rest[:, :spatial_size] if spatial_size >= 0 else None
    logits = rest[:, max(spatial_size, 0):] if logit_size >= 0 else None
    return EvaluationFeatures(pool, spatial, logits)


@dataclass(frozen=True)
class SampleEvaluation:
    """The evaluator's numbers for one set of samples against one reference set."""

    fid: float
    sfid: float | None
    inception_score: float | None
    precision: float
    recall: float
    num_samples: int
    num_reference: int

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self, floor: SampleEvaluation | None = None, floor_label: str = "real data") -> str:
        """One line per metric; with ``floor`` (the same numbers for real images against the reference) a second
        column: what a perfect model would get with this many images."""
        rows = [("FID", "fid"), ("sFID", "sfid"), ("Inception Score", "inception_score"),
                ("Precision", "precision"), ("Recall", "recall")]
        width = max(12, len(floor_label) + 2)
        lines = [f"{'metric':<16}{'samples':>12}" + (f"{floor_label:>{width}}" if floor else "")]
        for name, key in rows:
            line = f"{name:<16}{_number(getattr(self, key)):>12}"
            if floor is not None:
                line += f"{_number(getattr(floor, key)):>{width}}"
            lines.append(line)
        counts = f"{self.num_samples} vs {self.num_reference}"
        line = f"{'images':<16}{counts:>12}"
        if floor is not None:
            line += f"{f'{floor.num_samples} vs {floor.num_reference}':>{width}}"
        lines.append(line)
        return "\n".join(lines)


def _number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def evaluate_samples(samples, reference_images, feature_net=None, *, k: int = 3,
                     split_size: int = DEFAULT_SPLIT_SIZE, batch_size: int = 256, device=None,
                     progress: bool = False) -> SampleEvaluation:
    """FID, sFID, Inception Score, precision and recall of ``samples`` against ``reference_images``.

    ``samples`` and ``reference_images`` are images (N, C, H, W) in [-1, 1] (or uint8, a dataset, batches: any form
    :func:`~.fid.extract_features` takes), or their :class:`EvaluationFeatures` computed once by
    :func:`evaluation_features`. ``feature_net`` defaults to the shipped digits network
    (:func:`~.features.load_digits_feature_net`); :class:`~.features.InceptionV3Features` gives the Inception
    numbers. The Inception Score is of the samples alone, in splits of ``split_size``; precision and recall use
    ``k`` neighbours (each set needs more than ``k`` images). FIDs are biased upwards by small sets: compare numbers
    computed with equally many images, or against the real-data floor (real images in place of the samples).
    """
    if feature_net is None and not (isinstance(samples, EvaluationFeatures)
                                    and isinstance(reference_images, EvaluationFeatures)):
        from .features import load_digits_feature_net

        feature_net = load_digits_feature_net()
    fake = samples if isinstance(samples, EvaluationFeatures) else evaluation_features(
        samples, feature_net, batch_size, device, progress)
    real = reference_images if isinstance(reference_images, EvaluationFeatures) else evaluation_features(
        reference_images, feature_net, batch_size, device, progress)
    if fake.pool.shape[1] != real.pool.shape[1]:
        raise ValueError(f"the samples' features have {fake.pool.shape[1]} dimensions, the reference's "
                         f"{real.pool.shape[1]}: were they made by different networks?")
    pr = precision_recall(real.pool, fake.pool, k=k)
    sfid = None
    if fake.spatial is not None and real.spatial is not None:
        sfid = fid_from_features(fake.spatial, real.spatial)
    score = inception_score_from_logits(fake.logits, split_size) if fake.logits is not None else None
    return SampleEvaluation(fid=fid_from_features(fake.pool, real.pool), sfid=sfid, inception_score=score,
                            precision=pr.precision, recall=pr.recall, num_samples=len(fake),
                            num_reference=len(real))
