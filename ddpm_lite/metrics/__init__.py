"""Sample-quality and likelihood metrics: FID, improved precision/recall, label accuracy, bits/dim.

Example::

    from ddpm_lite.metrics import load_digits_feature_net, compute_fid, reference_statistics
    net = load_digits_feature_net()                         # 64-d features of 8x8 / 16x16 digits
    ref = reference_statistics("digits", "train", net)      # cached on disk, keyed by weights and data
    fid = compute_fid(samples, ref, net)                    # samples: (N, 1, 8, 8) in [-1, 1]

* :mod:`.fid` -- ``feature_statistics``, ``frechet_distance`` (accurate and fast: the nuclear norm of A^T B),
  ``fid_from_features``, ``extract_features``, ``compute_fid``, ``reference_statistics``.
* :mod:`.features` -- ``InceptionV3Features`` (torchvision weights; not the TF-Inception of published FIDs),
  ``DigitsFeatureNet`` / ``load_digits_feature_net`` (shipped, trained by ``tools/train_digits_features.py``),
  ``label_accuracy``.
* :mod:`.precision_recall` -- ``precision_recall`` (Kynkäänniemi et al. 2019, k = 3).
* :mod:`.inception_score` -- ``inception_score`` (of images, through a classifier's logits),
  ``inception_score_from_logits`` / ``_from_probs``: splits of 5000 and their mean, as guided-diffusion's evaluator.
* :mod:`.evaluator` -- ``evaluate_samples``: FID, sFID, Inception Score, precision and recall in one table, the
  numbers of guided-diffusion's ``evaluations/evaluator.py``, in the space of any feature network.
* :mod:`.likelihood` -- ``bits_per_dim`` over a test set with ``GaussianDiffusion.calc_bpd_loop``.
* :mod:`.variance` -- ``variance_fit``: is a learned variance trained? The model's v(t) of Improved DDPM eq. 15
  against ``kl_optimal_v``, the v*(t) its own x_0 errors ask for; ``log_variance_fit``
  (a Trainer callback) and ``FixedV`` (sample with the oracle v*); the course's
  ``ddpm_lite.course.plotting.variance_fit_figure`` draws the fits.
"""
from .evaluator import EvaluationFeatures, SampleEvaluation, evaluate_samples, evaluation_features
from .features import (
    SPATIAL_CHANNELS,
    DigitsFeatureNet,
    InceptionV3Features,
    WeightsNotFoundError,
    digits_feature_net_note,
    label_accuracy,
    load_digits_feature_net,
)
from .fid import (
    compute_fid,
    extract_features,
    feature_dim,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    psd_factor,
    reference_statistics,
    trace_sqrt_product,
)
from .inception_score import (
    class_logits,
    inception_score,
    inception_score_from_logits,
    inception_score_from_probs,
    inception_score_splits,
)
from .likelihood import bits_per_dim
from .precision_recall import PrecisionRecall, precision_recall
from .variance import FixedV, VarianceFit, kl_optimal_v, log_variance_fit, variance_fit

__all__ = [
    "SPATIAL_CHANNELS",
    "DigitsFeatureNet",
    "EvaluationFeatures",
    "FixedV",
    "InceptionV3Features",
    "PrecisionRecall",
    "SampleEvaluation",
    "VarianceFit",
    "WeightsNotFoundError",
    "bits_per_dim",
    "class_logits",
    "compute_fid",
    "digits_feature_net_note",
    "evaluate_samples",
    "evaluation_features",
    "extract_features",
    "feature_dim",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "inception_score",
    "inception_score_from_logits",
    "inception_score_from_probs",
    "inception_score_splits",
    "kl_optimal_v",
    "label_accuracy",
    "load_digits_feature_net",
    "log_variance_fit",
    "precision_recall",
    "psd_factor",
    "reference_statistics",
    "trace_sqrt_product",
    "variance_fit",
]
