"""The talk's claims, reproduced on the 8x8 digits: Improved DDPM's changes and the guidance trade-off.

    python bench/claims.py --quick      # under 15 minutes on 2 cores: 600 steps, 1 seed, small evaluations
    python bench/claims.py              # the full profile: 2,000 steps (as the shipped models), several hours
    python bench/claims.py --claims 2   # one claim (here: learned vs fixed variance) of the chosen profile
    python bench/claims.py --profile full-lite --claims 2 --work runs/claims-full --reuse   # claim 2 as in
                                        # docs/claims.md: the full profile's models, 334 samples x 3 seeds (42 min);
                                        # then full-lite-same, -rest and -long (--chains, --variants: side by side),
                                        # and full-lite-pixel (six seeds, every cell measured in pixel space too)
    python bench/claims.py --merge A.json B.json ... --name NAME   # one claim-2 report from several runs

Every model is the ``digits`` preset (the shipped unconditional model's config: ADM U-Net, cosine schedule,
learned variance, hybrid loss, batch 128) with one thing changed, trained for the same number of steps:

============== =========================================================== =====================
run            change from the ``digits`` preset                           claims
============== =========================================================== =====================
cosine-hybrid  none                                                        1, 5
linear-hybrid  linear schedule (DDPM)                                      1
cosine-simple  L_simple, fixed variances (DDPM): beta-tilde and beta       5
vlb-uniform    trained on L_vlb alone (``rescaled_kl``), t uniform         3
vlb-importance trained on L_vlb alone, t importance-sampled (eq. 18)       3
============== =========================================================== =====================

1. cosine vs linear schedule: bits/dim and FID (Improved DDPM section 3.2);
2. learned variance vs fixed variances against respaced sampling steps (section 4, Figure 8), with its own models
   and protocol (below);
3. importance sampling vs uniform t on L_vlb: the training loss's noise and the final bits/dim (section 3.3);
4. classifier guidance scale 0 to 10 (Dhariwal & Nichol, Algorithm 1), with the shipped unconditional model
   and noisy classifier (``make checkpoints`` trains them from their presets, 2,000 steps): label accuracy,
   precision and recall (Kynkaanniemi et al.), FID;
5. bits/dim of the hybrid model vs the L_simple model (Table 1 and 2).

Measures (claims 1, 3-5): bits/dim of the variational bound on the first test digits (every one of the 1,000
terms; the same x_t noise for every model, so differences are paired) with its standard error over images;
digits-FID of samples (ancestral, EMA weights, the same starting noise for every model) against the training
digits, in the feature space of the shipped digits network, beside the floor: as many real test digits against
the same training digits. Error bars: the spread over seeds (full profile) or, for bits/dim, the standard error
over images.

**Claim 2, the way the paper tested it.** For each chain length T of the profile (Figure 8 uses T = 4000), three
models of the ``digits`` preset are trained for ``variance_train_steps`` (seed 0; ``rescaled_mse``, i.e.
lambda = 0.001 on L_vlb = T L_t, for T != 1000): ``hybrid`` (the paper's hybrid loss), ``hybrid-v`` (the hybrid
loss with its L_vlb term preconditioned so that v trains at every t: :class:`VPreconditionedDiffusion`) and
``simple`` (L_simple, fixed beta-tilde). :func:`ddpm_lite.metrics.variance_fit` measures whether each hybrid
model's v(t) tracks v*(t) (logged during training, and after it on 256 test digits). Then every variant of
:data:`VARIANTS` draws ``variance_samples`` samples per seed at each of ``variance_steps`` respaced steps, the
same x_T and path noise for every variant at a given seed (paired); the "long" step counts (the full chain)
only for :data:`LONG_VARIANTS` and ``variance_long_seeds``, which is what 1,000 network calls per sample allow on
2 cores. FID against the 360 held-out TEST digits (the one reference set of the series), with the real-data
floor (as many training digits against the test digits, one random draw per seed). Each cell: mean ± sd over
seeds; each variant's paired difference to learned Sigma (hybrid-v) over seeds, with a 95% t-interval
(n - 1 degrees of freedom) and a two-sided paired t-test. The same cells are measured in pixel space too (runs
since ``full-lite-pixel``): the Frechet distance of the raw pixels against the test images, with its floor, and
the samples' total variance; beside them the report gives the closed form for a perfect model of Gaussian digits
(:func:`ddpm_lite.course.analytic.gaussian_sampler_moments`), where a fixed beta~ leaves the samples too little
spread at few steps.

Runs go two at a time in worker processes of one thread each (``--workers``). Results: a markdown report, a JSON
file and figures in ``--out`` (default ``docs/claims/``), named after the profile: ``fid_vs_steps-quick.png``
(claim 2), ``variance_fit-quick.png`` (claim 2: v(t) against v*(t)), ``guidance-quick.png``, ``vb_terms-quick.png``
and ``vlb_loss-quick.png`` (the L_vlb training curves). Claim 2's trained models go to ``--work`` (default
``runs/claims-<profile>/``, not committed).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from machine import describe  # bench/machine.py

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Profile:
    steps: int  # training steps of every run
    seeds: tuple[int, ...]
    bpd_images: int  # test digits in the bits/dim evaluation
    fid_samples: int  # samples per FID (and real test digits in the floor)
    fid_steps: tuple[int, ...]  # respaced sampling steps (1000 = all)
    guidance_scales: tuple[float, ...]
    guidance_steps: int
    # claim 2 (learned vs fixed variance): its own models and protocol
    variance_chains: tuple[int, ...] = (1000,)  # T of the claim-2 models
    variance_train_steps: int = 2000
    variance_samples: int = 1000  # samples per FID and seed
    variance_seeds: tuple[int, ...] = (0, 1, 2)  # sampling seeds: x_T and the path noise, shared by the variants
    variance_steps: tuple[int, ...] = (25, 50, 100)  # every variant, every seed
    variance_long_steps: tuple[int, ...] = ()  # LONG_VARIANTS only, variance_long_seeds only, T = 1000 only
    variance_long_seeds: tuple[int, ...] = (0,)
    variance_fit_images: int = 256  # test digits of the v(t) / v*(t) fit
    variance_paper_chains: tuple[int, ...] = (1000,)  # T where the paper's hybrid loss is trained and sampled too
    variance_long_chains: tuple[int, ...] = (1000,)  # T where the long step counts are sampled
    variance_variants: tuple[str, ...] | None = None  # the VARIANTS sampled (None: all)
    variance_job_per_seed: bool = False  # one sampling job per (T, variant, seed), seed-major: finer, and every
    # variant has its first seeds done before any has its last
    variance_extra_steps: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (variant, step counts) on top of
    # variance_steps, every chain and seed
    variance_done: tuple[tuple[int, str, int], ...] = ()  # (T, variant, steps) cells another profile samples: skipped


# claim 2 on 2 busy shared cores, with the full profile's trained models (--claims 2 --work runs/claims-full
# --reuse): the full profile's 1,000 samples x 3 seeds x (25 + 50 + 100 steps) x 15 variants, plus the long
# steps, is ~10,000 network calls of batch 1,000, hours of CPU time; this is a third of the samples per seed
# (1,002 paired samples per cell over the seeds), the paper's comparisons (learned, fixed beta~ and beta with
# L_simple, DDIM; the paper's own hybrid loss at T = 1000), no long step counts
FULL_LITE = Profile(steps=2000, seeds=(0, 1), bpd_images=128, fid_samples=360,
                    fid_steps=(10, 25, 50, 100, 250, 1000), guidance_scales=(0, 0.5, 1, 2, 3, 4, 6, 8, 10),
                    guidance_steps=50,
                    variance_chains=(1000, 4000), variance_train_steps=2000, variance_samples=334,
                    variance_seeds=(0, 1, 2), variance_steps=(25, 50, 100),
                    variance_variants=("learned", "learned-paper", "simple-small", "simple-large", "ddim"),
                    variance_job_per_seed=True)
PROFILES = {
    "quick": Profile(steps=600, seeds=(0,), bpd_images=48, fid_samples=200, fid_steps=(10, 25, 50, 100),
                     guidance_scales=(0, 1, 2, 4, 6, 10), guidance_steps=25,
                     variance_chains=(1000,), variance_train_steps=600, variance_samples=200, variance_seeds=(0, 1),
                     variance_steps=(25, 50), variance_fit_images=128),
    "full": Profile(steps=2000, seeds=(0, 1), bpd_images=128, fid_samples=360,
                    fid_steps=(10, 25, 50, 100, 250, 1000), guidance_scales=(0, 0.5, 1, 2, 3, 4, 6, 8, 10),
                    guidance_steps=50,
                    variance_chains=(1000, 4000), variance_train_steps=2000, variance_samples=1000,
                    variance_seeds=(0, 1, 2), variance_steps=(25, 50, 100), variance_long_steps=(250, 1000),
                    variance_long_seeds=(0,)),
    "full-lite": FULL_LITE,
    # the same plan for the learned Sigma and the hybrid-v network sampled with a fixed beta~ (is the gap to the
    # L_simple model's beta~ the variance or the network?); a second run, after full-lite
    "full-lite-same": replace(FULL_LITE, variance_variants=("learned", "same-small")),
    # the cells full-lite and full-lite-same left out, the same models, samples and seeds (--merge joins the
    # reports): every variant at 250 steps, the oracle v* and the same network with beta at 25/50/100 too, and the
    # full chain (1,000 steps of T = 1000) for learned Sigma and the L_simple model's beta~
    "full-lite-rest": replace(FULL_LITE, variance_variants=None, variance_steps=(250,),
                              variance_extra_steps=(("oracle", (25, 50, 100)), ("same-large", (25, 50, 100))),
                              variance_long_steps=(1000,), variance_long_seeds=(0, 1, 2)),
    # and the last cells, after full-lite-rest: every other variant at 1,000 steps, T = 1000 (the full chain) and
    # T = 4000
    "full-lite-long": replace(FULL_LITE, variance_variants=None, variance_steps=(1000,),
                              variance_done=((1000, "learned", 1000), (1000, "simple-small", 1000))),
    # where the beta~ effect shows: the same models and variants at 25-250 steps, six seeds (2,004 paired samples
    # per cell), each cell measured in the digits features and in pixel space (the Frechet distance of the raw
    # pixels, the samples' total variance)
    "full-lite-pixel": replace(FULL_LITE, variance_seeds=(0, 1, 2, 3, 4, 5), variance_steps=(25, 50, 100, 250),
                               variance_variants=("learned", "oracle", "same-small", "same-large", "simple-small",
                                                  "simple-large", "ddim")),
    # claim 2 on one GPU (--claims 2 --data mnist --device cuda --workers 1): the paper's T = 4000, 20,000 steps
    "gpu": Profile(steps=2000, seeds=(0,), bpd_images=128, fid_samples=1000, fid_steps=(25, 50, 100),
                   guidance_scales=(0, 2), guidance_steps=50, variance_chains=(4000,), variance_train_steps=20000,
                   variance_samples=10000, variance_seeds=(0, 1, 2), variance_steps=(25, 50, 100, 250, 1000),
                   variance_long_steps=(4000,), variance_long_seeds=(0,), variance_fit_images=1000,
                   variance_paper_chains=(4000,), variance_long_chains=(4000,)),
    # seconds: only checks that the script runs end to end (the tests use it)
    "smoke": Profile(steps=2, seeds=(0,), bpd_images=2, fid_samples=12, fid_steps=(2, 3), guidance_scales=(0, 2),
                     guidance_steps=2, variance_chains=(1000,), variance_train_steps=2, variance_samples=12,
                     variance_seeds=(0, 1), variance_steps=(2, 3), variance_long_steps=(4,), variance_long_seeds=(0,),
                     variance_fit_images=4),
}
RUNS = {
    "cosine-hybrid": {},
    "linear-hybrid": {"diffusion.schedule": "linear"},
    "cosine-simple": {"diffusion.var_type": "fixed_small"},
    "vlb-uniform": {"diffusion.loss_type": "rescaled_kl"},
    "vlb-importance": {"diffusion.loss_type": "rescaled_kl", "schedule_sampler": "loss-second-moment"},
}
# the variances each run is sampled and scored with: its own, and for L_simple both of DDPM's fixed choices
VARIANCES = {"cosine-simple": ("fixed_small", "fixed_large")}
FID_RUNS = ("cosine-hybrid", "linear-hybrid")
CLAIMS = (1, 2, 3, 4, 5)
CLAIM_RUNS = {1: ("cosine-hybrid", "linear-hybrid"), 3: ("vlb-uniform", "vlb-importance"),
              5: ("cosine-hybrid", "cosine-simple", "vlb-importance")}


# --------------------------------------------------------------------------- shared evaluation data


def _evaluation_data(profile: Profile):
    """(feature net, train features, test images for bits/dim, the floor FID) for ``profile``."""
    from ddpm_lite.data import load_dataset
    from ddpm_lite.metrics import extract_features, fid_from_features, load_digits_feature_net

    net = load_digits_feature_net(device="cpu")
    train = extract_features(load_dataset("digits", "train").images, net)
    test = load_dataset("digits", "test").images
    floor = fid_from_features(extract_features(test[:profile.fid_samples], net), train)
    return net, train, test[:profile.bpd_images], floor


# --------------------------------------------------------------------------- one training run (in a worker)


def train_and_evaluate(name: str, seed: int, profile: Profile, share: tuple[str, Path] | None = None) -> dict:
    """Train run ``name`` with ``seed`` and score it: bits/dim, FID against steps, the loss history. ``share``
    (kind, work folder): this run is also claim 2's model ``kind`` for T = 1000 (the same config, steps and
    seed): save it there as :func:`train_variance_model` would."""
    from ddpm_lite.configs import ExperimentConfig
    from ddpm_lite.course.fast_sampling import sample_with
    from ddpm_lite.course.learned_variance import with_variance
    from ddpm_lite.metrics import bits_per_dim, extract_features, fid_from_features
    from ddpm_lite.train import Trainer

    torch.set_num_threads(1)
    start = time.perf_counter()
    net, train_features, bpd_images, _ = _evaluation_data(profile)
    config = ExperimentConfig.preset("digits", seed=seed, save_every=profile.steps).override(RUNS[name])
    fits = _fit_logger(share[0], profile) if share is not None else None
    trainer = Trainer.from_config(config, device="cpu", progress=False, callbacks=[fits] if fits else [])
    trainer.train(profile.steps)
    train_minutes = (time.perf_counter() - start) / 60
    if share is not None:
        _save_variance_model(trainer, share[0], 1000, config, share[1], fits, train_minutes)
    result = {"name": name, "seed": seed, "loss": trainer.loss_history, "train_minutes": train_minutes,
              "bpd": {}, "fid": {}}
    for var_type in VARIANCES.get(name, (config.diffusion.var_type,)):
        diffusion = with_variance(trainer.diffusion, var_type)
        bpd = bits_per_dim(diffusion, trainer.ema, bpd_images, batch_size=len(bpd_images), progress=False,
                           generator=torch.Generator().manual_seed(1234))
        result["bpd"][var_type] = {"mean": bpd["mean"], "stderr": bpd["stderr"], "vb": bpd["vb"].tolist(),
                                   "decoder_bpd": bpd["decoder_bpd"], "prior_bpd": bpd["prior_bpd"],
                                   "per_image": bpd["total_bpd"].tolist()}
        if name in FID_RUNS:
            result["fid"][var_type] = {
                steps: fid_from_features(extract_features(
                    sample_with(trainer.ema, diffusion, profile.fid_samples, steps, seed=99), net), train_features)
                for steps in profile.fid_steps}
    result["minutes"] = (time.perf_counter() - start) / 60
    print(f"  {name} (seed {seed}): {train_minutes:.1f} min training, {result['minutes']:.1f} min in all; bits/dim "
          + ", ".join(f"{v}: {b['mean']:.3f}" for v, b in result["bpd"].items()), flush=True)
    return result


def guidance_sweep(profile: Profile) -> dict:
    """Classifier guidance of the shipped digits model by the shipped noisy classifier, at every scale."""
    from ddpm_lite.course.evaluate import sample_quality
    from ddpm_lite.guidance import LabelBlind, classifier_cond_fn
    from ddpm_lite.pretrained import load_pretrained
    from ddpm_lite.sampling import generate

    torch.set_num_threads(1)
    start = time.perf_counter()
    net, train_features, _, _ = _evaluation_data(profile)
    model, diffusion, _ = load_pretrained("digits", device="cpu")
    classifier, _, _ = load_pretrained("digits_classifier", device="cpu")
    labels = torch.arange(profile.fid_samples) % 10  # every class equally often
    metrics = {}
    for scale in profile.guidance_scales:
        samples = generate(LabelBlind(model), diffusion, (len(labels), 1, 8, 8), steps=profile.guidance_steps,
                           y=labels, generator=torch.Generator().manual_seed(7), device="cpu",
                           cond_fn=classifier_cond_fn(classifier, scale) if scale else None)
        metrics[scale] = sample_quality(samples, labels, train_features, net)
    minutes = (time.perf_counter() - start) / 60
    print(f"  guidance: {minutes:.1f} min", flush=True)
    return {"name": "guidance", "metrics": metrics, "minutes": minutes}


# --------------------------------------------------------------------------- claim 2: learned vs fixed variance

# variant -> (label, what it samples); "hybrid-v" is the learned-variance network whose v tracks v*
VARIANTS = {
    "learned": "learned Σ (hybrid loss, v trained)",
    "learned-paper": "learned Σ (the paper's hybrid loss as is)",
    "oracle": "oracle Σ* (v* in eq. 15), same network",
    "same-small": "Σ = β̃, same network",
    "same-large": "Σ = β, same network",
    "simple-small": "Σ = β̃, L_simple model",
    "simple-large": "Σ = β, L_simple model",
    "ddim": "DDIM η = 0, same network",
}
# the measures of each claim-2 cell (runs before the pixel measures have "fid" alone)
METRICS = {"fid": "FID (digits features)", "pfd": "pixel Fréchet distance", "spread": "total variance of the samples",
           "feature_spread": "total variance of the samples' digits features"}
LONG_VARIANTS = ("learned", "simple-small")  # also sampled at the profile's long step counts
VARIANCE_MODELS = ("hybrid-v", "hybrid", "simple")
SHIPPED = ROOT / "ddpm_lite" / "checkpoints" / "digits.pt"  # the digits preset, 2,000 steps, seed 0


def variance_models(profile: Profile, T: int) -> tuple[str, ...]:
    """The claim-2 models of chain length T: the paper's hybrid only where the profile asks for it."""
    return tuple(k for k in VARIANCE_MODELS if k != "hybrid" or T in profile.variance_paper_chains)


def variance_variants(profile: Profile, T: int) -> tuple[str, ...]:
    return tuple(v for v in VARIANTS if (v != "learned-paper" or T in profile.variance_paper_chains)
                 and (profile.variance_variants is None or v in profile.variance_variants))


def clipped_hybrid_terms(diffusion, model, x_start, t, noise=None, model_kwargs=None):
    """(L_simple, L_vlb term) per example of the hybrid loss (Improved DDPM eq. 16) with the stop-gradient on the
    mean, the L_vlb term computed with the sampler's clipped x0_hat and scaled by T / 1000 (``rescaled_mse``): the
    terms the preconditioned losses here and in bench/variance_training.py weight. An eps, learned_range model."""
    noise = torch.randn_like(x_start) if noise is None else noise
    x_t = diffusion.q_sample(x_start, t, noise=noise)
    mean_out, var_values = diffusion._split_model_output(model(x_t, t, **(model_kwargs or {})), x_t)
    frozen = torch.cat([mean_out.detach(), var_values], dim=1)
    vb = diffusion._vb_terms_bpd(lambda *args, **kwargs: frozen, x_start, x_t, t, clip_denoised=True)["output"]
    mse = ((noise - mean_out.to(noise.dtype)) ** 2).mean(dim=list(range(1, x_t.ndim)))
    return mse, vb * (diffusion.num_timesteps / 1000.0)


class VPreconditionedDiffusion:
    """The hybrid loss with its L_vlb term made to train v at every t (a mixin for :class:`GaussianDiffusion`;
    build it with :func:`v_preconditioned`).

    The term L_{t-1} trains only Sigma (stop-gradient on the mean, Improved DDPM section 3.1). As a function of
    v (eq. 15) its curvature at the optimum v* is 1/2 delta_t^2, delta_t = log(beta_t / beta~_t), which is 0.56 at
    t = 1 and 1e-5 at the median t of a 1000-step cosine chain (see :mod:`ddpm_lite.metrics.variance`): v at most
    t is left untrained. Here the term of step t is divided by delta_t^2, so the pull toward v* is the same at
    every t, and computed with the sampler's clipped x0_hat (the unclipped one explodes at the last step of the
    cosine chain, where abar ~ 2e-9, and its v* there, ~5e5, would dominate the reweighted loss). The minimiser at
    each t is unchanged (v* for the clipped mean); the eps part (L_simple) and its gradient are unchanged. The
    weight is capped at ``cap`` (1e12; delta_t^2 is 6e-12 at the last step of T = 1000). The term is scaled by
    T / 1000 as ``rescaled_mse`` does (lambda = 0.001 on L_vlb = T L_t).
    """

    cap = 1e12

    def _v_weights(self) -> torch.Tensor:
        if getattr(self, "_vb_weight_table", None) is None:
            gap = self.betas ** 2 * self.alphas_cumprod_prev / (1 - self.alphas_cumprod)  # beta - beta~, t >= 1
            delta = np.log1p(gap[1:] / self.posterior_variance[1:])
            # t = 0 (the decoder term): eq. 15 spans log beta_0 .. log beta~_1 there (the clipped log beta~_0)
            delta = np.append(abs(np.log(self.betas[0] / self.posterior_variance[1])), delta)
            self._vb_weight_table = torch.from_numpy(np.minimum(1.0 / delta ** 2, self.cap)).float()
        return self._vb_weight_table

    def training_losses(self, model, x_start, t, noise=None, model_kwargs=None):
        if self.mean_type != "eps" or self.var_type != "learned_range" or self.loss_type not in ("simple",
                                                                                                  "rescaled_mse"):
            raise ValueError("the preconditioned hybrid loss needs mean_type eps, var_type learned_range and the "
                             "hybrid loss (loss_type simple or rescaled_mse)")
        mse, vb = clipped_hybrid_terms(self, model, x_start, t, noise, model_kwargs)
        vb = vb * self._v_weights().to(t.device)[t]
        return {"mse": mse, "vb": vb, "loss": mse + vb}


def v_preconditioned(diffusion):
    """A copy of ``diffusion`` (a GaussianDiffusion) trained with :class:`VPreconditionedDiffusion`'s loss."""
    from ddpm_lite.gaussian_diffusion import GaussianDiffusion

    cls = type("VPreconditionedGaussianDiffusion", (VPreconditionedDiffusion, GaussianDiffusion), {})
    return cls(diffusion.betas, diffusion.mean_type, diffusion.var_type, diffusion.loss_type)


def _variance_config(kind: str, T: int, profile: Profile, data: str = "digits"):
    """The ``digits`` preset (on ``data``, with the U-Net sized for it) with chain length T, for model ``kind``."""
    from ddpm_lite.configs import ExperimentConfig

    changes = {"diffusion.num_timesteps": T, "save_every": profile.variance_train_steps}
    if T != 1000:
        changes["diffusion.loss_type"] = "rescaled_mse"  # lambda = 0.001 on L_vlb = T L_t, as the paper
    if kind == "simple":
        changes["diffusion.var_type"] = "fixed_small"
    from ddpm_lite.configs import preset_names

    base = ExperimentConfig.preset(data if data in preset_names() else "digits", seed=0)  # mnist: its GPU preset
    return base.with_data(data).override(changes)


def _model_path(work: Path, kind: str, T: int) -> Path:
    return work / f"{kind}-T{T}.pt"


def train_variance_model(kind: str, T: int, profile: Profile, work: Path, reuse: bool = False, data: str = "digits",
                         device: str = "cpu") -> dict:
    """Train one claim-2 model (``hybrid-v``, ``hybrid`` or ``simple``) with chain length T; save its EMA weights
    and a record (config, training minutes, the variance fit logged four times during training, for the hybrid
    ones) to ``work``. ``reuse``: return the record of a model already there with the same config instead."""
    from ddpm_lite.train import Trainer

    record_path = _model_path(work, kind, T).with_suffix(".json")
    config = _variance_config(kind, T, profile, data)
    if reuse and record_path.exists() and _model_path(work, kind, T).exists():
        record = json.loads(record_path.read_text())
        if _same_config(record.get("config") or {}, config):
            print(f"  claim 2: {kind}, T = {T}: reusing {_model_path(work, kind, T)}", flush=True)
            return record
    torch.set_num_threads(1)
    start = time.perf_counter()
    if kind == "hybrid" and _is_shipped(config, profile.variance_train_steps):
        return _copy_shipped(config, T, work)
    fits = _fit_logger(kind, profile, data)
    trainer = Trainer.from_config(config, device=device, progress=False, callbacks=[fits] if fits else [])
    if kind == "hybrid-v":
        trainer.diffusion = trainer.objective.diffusion = v_preconditioned(trainer.diffusion)
    trainer.train(profile.variance_train_steps)
    return _save_variance_model(trainer, kind, T, config, work, fits, (time.perf_counter() - start) / 60)


def _same_config(saved: dict, config) -> bool:
    """True when ``saved`` (a config dict written earlier) is ``config``: fields it predates (added to
    ExperimentConfig since) count as their defaults."""
    ours, defaults = config.to_dict(), type(config)().to_dict()
    return set(saved) <= set(ours) and all(saved.get(k, defaults[k]) == v for k, v in ours.items())


def _is_shipped(config, steps: int) -> bool:
    """True when the shipped digits model is this model: the same config (but how often it saved) and steps."""
    if not SHIPPED.exists():
        return False
    state = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    ours = dict(config.to_dict(), save_every=None)
    shipped = dict(state["config"], save_every=None)
    # fields the shipped file predates (speed options such as channels_last) count as their defaults
    defaults = type(config)().to_dict()
    return state.get("step") == steps and all(shipped.get(k, defaults[k]) == v for k, v in ours.items())


def _copy_shipped(config, T: int, work: Path) -> dict:
    state = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config.to_dict(), "ema": state["ema"]}, _model_path(work, "hybrid", T))
    print(f"  claim 2: hybrid, T = {T}: the shipped digits model (the same config and steps)", flush=True)
    record = {"name": "variance-model", "kind": "hybrid", "T": T, "minutes": 0.0, "config": config.to_dict(),
              "shipped": True, "fits": []}
    _model_path(work, "hybrid", T).with_suffix(".json").write_text(json.dumps(record))
    return record


def _fit_logger(kind: str, profile: Profile, data: str = "digits"):
    """The Trainer callback that logs the variance fit four times during training (None for L_simple)."""
    from ddpm_lite.data import load_dataset
    from ddpm_lite.metrics.variance import log_variance_fit
    from ddpm_lite.train import every

    if kind == "simple":
        return None
    fits = log_variance_fit(load_dataset(data, "test").images[:profile.variance_fit_images], verbose=False)
    callback = every(max(1, profile.variance_train_steps // 4), fits)
    callback.fits = fits.fits
    return callback


def _save_variance_model(trainer, kind: str, T: int, config, work: Path, fits, minutes: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config.to_dict(), "ema": trainer.ema.state_dict()}, _model_path(work, kind, T))
    print(f"  claim 2: {kind}, T = {T}: {minutes:.1f} min", flush=True)
    record = {"name": "variance-model", "kind": kind, "T": T, "minutes": minutes, "config": config.to_dict(),
              "mse": float(np.mean(trainer.history["mse"][-100:])),
              "fits": [f.to_dict() for f in fits.fits] if fits is not None else []}
    _model_path(work, kind, T).with_suffix(".json").write_text(json.dumps(record))
    return record


def load_variance_model(work: Path, kind: str, T: int, device: str = "cpu"):
    """(EMA model in eval mode, its plain diffusion) of a claim-2 model saved by :func:`train_variance_model`."""
    from ddpm_lite.configs import ExperimentConfig

    state = torch.load(_model_path(work, kind, T), map_location="cpu", weights_only=True)
    config = ExperimentConfig.from_dict(state["config"])
    model = config.build_model()
    model.load_state_dict(state["ema"])
    return model.eval().to(device), config.build_diffusion()


def _fit_path(work: Path, kind: str, T: int) -> Path:
    return work / f"fit-{kind}-T{T}.json"


def variance_sampler(variant: str, T: int, work: Path, device: str = "cpu"):
    """(model, diffusion, generate() keyword arguments) of one claim-2 variant."""
    from ddpm_lite.course.learned_variance import MeanOnly, with_variance
    from ddpm_lite.metrics.variance import FixedV, VarianceFit

    if variant in ("simple-small", "simple-large"):
        model, diffusion = load_variance_model(work, "simple", T, device)
        var = "fixed_small" if variant == "simple-small" else "fixed_large"
        return model, with_variance(diffusion, var), {}
    model, diffusion = load_variance_model(work, "hybrid" if variant == "learned-paper" else "hybrid-v", T, device)
    if variant in ("learned", "learned-paper"):
        return model, diffusion, {}
    if variant == "ddim":
        return model, diffusion, {"ddim": True, "eta": 0.0}
    if variant == "oracle":
        fit = VarianceFit.from_dict(json.loads(_fit_path(work, "hybrid-v", T).read_text()))
        return FixedV(model, fit.v_star_every_step()).to(device), diffusion, {}
    var = "fixed_small" if variant == "same-small" else "fixed_large"
    return MeanOnly(model), with_variance(diffusion, var), {}


def _test_features(net, data: str = "digits"):
    """Features of the held-out test images of ``data`` (the digits: 360; MNIST: 10,000)."""
    from ddpm_lite.metrics import extract_features

    return extract_features(_test_images(data), net)


def sample_variant(T: int, variant: str, plan: tuple[tuple[int, tuple[int, ...]], ...], profile: Profile,
                   work: Path, data: str = "digits", device: str = "cpu") -> dict:
    """Three measures of ``variance_samples`` samples of one variant for each (seed, step counts) of ``plan``
    (the noise of ``seed``: x_T, then the noise of every step, drawn on the CPU, the same for every variant):
    ``fid`` in the digits feature space, ``pfd`` the Frechet distance in pixel space (the same formula on the
    raw pixels), ``spread`` the samples' total variance (the sum over pixels) and ``feature_spread`` the same in the
    digits feature space, all against the test images."""
    from ddpm_lite.configs import DATA_SHAPES
    from ddpm_lite.metrics import extract_features, fid_from_features, load_digits_feature_net
    from ddpm_lite.sampling import generate

    torch.set_num_threads(1)
    start = time.perf_counter()
    net = load_digits_feature_net(device=device)
    reference = _test_features(net, data)
    reference_pixels = _pixels(_test_images(data))
    model, diffusion, kwargs = variance_sampler(variant, T, work, device)
    measures: dict = {metric: {} for metric in METRICS}
    for seed, steps in plan:
        for k in steps:
            samples = generate(model, diffusion, (profile.variance_samples, *DATA_SHAPES[data]), steps=min(k, T),
                               generator=torch.Generator().manual_seed(seed), device=device, **kwargs)
            pixels, features = _pixels(samples), extract_features(samples, net)
            measures["fid"].setdefault(seed, {})[k] = fid_from_features(features, reference)
            measures["feature_spread"].setdefault(seed, {})[k] = spread(np.asarray(features, dtype=np.float64))
            measures["pfd"].setdefault(seed, {})[k] = fid_from_features(pixels, reference_pixels)
            measures["spread"].setdefault(seed, {})[k] = spread(pixels)
    minutes = (time.perf_counter() - start) / 60
    print(f"  claim 2: T = {T}, {variant}: {minutes:.1f} min", flush=True)
    return {"name": "variance-sample", "T": T, "variant": variant, **measures, "minutes": minutes}


def _test_images(data: str = "digits") -> torch.Tensor:
    from ddpm_lite.data import load_dataset

    return load_dataset(data, "test").images


def _pixels(images) -> np.ndarray:
    """Images (N, C, H, W) as float64 rows of pixels (N, C H W)."""
    return torch.as_tensor(images).reshape(len(images), -1).double().numpy()


def spread(pixels: np.ndarray) -> float:
    """The total variance of images as pixel rows: the sum over pixels of each pixel's variance over images
    (the trace of their covariance; the digits' test set: 19.0 in [-1, 1] units)."""
    return float(np.var(pixels, axis=0, ddof=1).sum())


def pixel_floor(profile: Profile, data: str = "digits") -> dict:
    """The pixel-space measures of real images: ``pfd``, the pixel Frechet distance of ``variance_samples``
    training images (one draw per seed, as :func:`variance_floor`) against the test images, ``spread``, the
    test images' total variance, and ``feature_spread``, that of their digits features."""
    from ddpm_lite.data import load_dataset
    from ddpm_lite.metrics import fid_from_features, load_digits_feature_net

    test, train = _pixels(_test_images(data)), _pixels(load_dataset(data, "train").images)
    draws = _floor_draws(profile, len(train))
    features = np.asarray(_test_features(load_digits_feature_net(device="cpu"), data), dtype=np.float64)
    return {"pfd": [fid_from_features(train[d], test) for d in draws], "spread": spread(test),
            "feature_spread": spread(features)}


def variance_floor(profile: Profile, data: str = "digits") -> list[float]:
    """FID of ``variance_samples`` real training images (one random draw per seed) against the test images."""
    from ddpm_lite.data import load_dataset
    from ddpm_lite.metrics import extract_features, fid_from_features, load_digits_feature_net

    net = load_digits_feature_net(device="cpu")
    reference = _test_features(net, data)
    train = load_dataset(data, "train").images
    return [fid_from_features(extract_features(train[d], net), reference) for d in _floor_draws(profile, len(train))]


def _floor_draws(profile: Profile, n_train: int) -> list[torch.Tensor]:
    """The training images of each seed's floor: ``variance_samples`` of them (all, when there are fewer), a
    random draw seeded by the seed."""
    n = min(profile.variance_samples, n_train)
    return [torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:n]
            for seed in profile.variance_seeds]


def fit_variance_models(profile: Profile, work: Path, data: str = "digits", device: str = "cpu",
                        reuse: bool = False) -> dict:
    """The variance fit of each trained hybrid model on the test images (saved for the oracle), as dicts.
    ``reuse``: read a fit saved after its model was (with as many images) instead of computing it again."""
    from ddpm_lite.data import load_dataset
    from ddpm_lite.metrics.variance import variance_fit

    images = load_dataset(data, "test").images[:profile.variance_fit_images]
    fits = {}
    for T in profile.variance_chains:
        for kind in (k for k in variance_models(profile, T) if k != "simple"):
            path = _fit_path(work, kind, T)
            if reuse and path.exists() and path.stat().st_mtime > _model_path(work, kind, T).stat().st_mtime:
                fit = json.loads(path.read_text())
                if fit.get("num_images") == len(images):
                    fits[f"{kind}-T{T}"] = fit
                    continue
            model, diffusion = load_variance_model(work, kind, T, device)
            fit = variance_fit(model, diffusion, images).to_dict()
            _fit_path(work, kind, T).write_text(json.dumps(fit))
            fits[f"{kind}-T{T}"] = fit
    return fits


def variance_sampling_jobs(profile: Profile, work: Path, data: str = "digits", device: str = "cpu") -> list[tuple]:
    """One job per (T, variant), every seed; the long step counts where they apply. Longest first, so that the
    two workers finish together."""
    jobs = []
    for T in profile.variance_chains:
        for variant in variance_variants(profile, T):
            plan = []
            extra = dict(profile.variance_extra_steps).get(variant, ())
            for seed in profile.variance_seeds:
                steps = tuple(sorted(set(profile.variance_steps) | set(extra)))
                if T in profile.variance_long_chains and variant in LONG_VARIANTS and \
                        seed in profile.variance_long_seeds:
                    steps += tuple(profile.variance_long_steps)
                steps = tuple(k for k in steps if (T, variant, k) not in profile.variance_done)
                if steps:
                    plan.append((seed, steps))
            if not plan:
                continue
            if profile.variance_job_per_seed:
                jobs += [("vsample", T, variant, (seed_steps,), profile, work, data, device) for seed_steps in plan]
            else:
                jobs.append(("vsample", T, variant, tuple(plan), profile, work, data, device))
    if profile.variance_job_per_seed:  # seed-major (the sort is stable), longest first within a seed
        return sorted(jobs, key=lambda job: (job[3][0][0], -sum(job[3][0][1])))
    return sorted(jobs, key=lambda job: -sum(sum(steps) for _, steps in job[3]))


def paired_test(a, b) -> dict | None:
    """Paired difference a - b over seeds: mean, sd, the 95% t-interval and the two-sided p of a paired t-test
    (None for fewer than 2 pairs)."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    if n < 2:
        return None
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    p = float(stats.ttest_rel(a, b).pvalue) if sd > 0 else (0.0 if mean != 0 else 1.0)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "p": p}


def variance_table(samples: list[dict], T: int, metric: str = "fid") -> dict:
    """{variant: {steps: {seed: value}}} of chain length T and one of :data:`METRICS` (from the results of
    :func:`sample_variant`, or their JSON, whose keys are strings)."""
    table: dict = {}
    for chain, variant, seed, k, f in sample_cells(samples, metric):
        if chain == T:
            table.setdefault(variant, {}).setdefault(k, {})[seed] = f
    return table


def sample_cells(samples: list[dict], metric: str = "fid"):
    """(T, variant, seed, steps, value) of every cell of the results of :func:`sample_variant` (or their JSON)
    that has ``metric``."""
    for r in samples:
        for seed, values in r.get(metric, {}).items():
            for k, f in values.items():
                yield r["T"], r["variant"], int(seed), int(k), f


def _job(job):
    kind, *args = job
    if kind == "guidance":
        return guidance_sweep(*args)
    if kind == "vtrain":
        return train_variance_model(*args)
    if kind == "vsample":
        return sample_variant(*args)
    return train_and_evaluate(*args)


# --------------------------------------------------------------------------- summaries


def mean_sd(values) -> str:
    """'m' for one value, 'm ± sd' (sample standard deviation over seeds) for several."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def loss_noise(losses, skip: float = 0.5, window: int = 25) -> float:
    """Noise of a training curve: the standard deviation of log10(loss) around its moving average over ``window``
    steps, on the last ``1 - skip`` of training (after the importance sampler's warm-up)."""
    from ddpm_lite.course.plotting import moving_average

    x = np.log10(np.asarray(losses[int(len(losses) * skip):], dtype=np.float64))
    return float(np.std(x - moving_average(x, window)))


def by_run(results) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for r in results:
        if r["name"] != "guidance":
            runs.setdefault(r["name"], []).append(r)
    return runs


def report(results, profile: Profile, floor: float | None, name: str, minutes: float, claims=CLAIMS,
           variance: dict | None = None) -> str:
    runs = by_run(results)
    seeds = ", ".join(map(str, profile.seeds))
    steps_cols = [("all" if s == 1000 else str(s)) for s in profile.fid_steps]
    lines = [f"## Results: `--{name}` profile", "", f"{describe()}. {minutes:.1f} min in all.", ""]
    if set(claims) & {1, 3, 5}:
        trained = sorted({run for c in claims for run in CLAIM_RUNS.get(c, ())}, key=list(RUNS).index)
        lines += [f"Claims 1, 3, 5: {len(trained)} runs x {len(profile.seeds)} seed(s) ({seeds}), {profile.steps} "
                  f"training steps each at batch 128. Bits/dim on the first {profile.bpd_images} test digits (± "
                  f"standard error over images for one seed, ± sd over seeds otherwise); FID of {profile.fid_samples} "
                  "samples against the training digits."
                  + (f" **Floor** ({profile.fid_samples} real test digits): **FID {floor:.3f}**." if floor else ""),
                  ""]

    def bpd(run, var=None):
        rs = runs[run]
        var = var or next(iter(rs[0]["bpd"]))
        if len(rs) == 1:
            b = rs[0]["bpd"][var]
            return f"{b['mean']:.3f} ± {b['stderr']:.3f}"
        return mean_sd([r["bpd"][var]["mean"] for r in rs])

    def fid(run, var, steps):
        return mean_sd([r["fid"][var][steps] for r in runs[run]])

    if 1 in claims:
        lines += ["### 1. Cosine vs linear schedule (hybrid loss, learned variance)", "",
                  "| schedule | bits/dim | " + " | ".join(f"FID, {c} steps" for c in steps_cols) + " |",
                  "|---|---|" + "---|" * len(steps_cols)]
        for run, label in (("linear-hybrid", "linear"), ("cosine-hybrid", "cosine")):
            lines.append(f"| {label} | {bpd(run)} | " + " | ".join(fid(run, "learned_range", s)
                                                                   for s in profile.fid_steps) + " |")
        lines.append("")
    if 2 in claims and variance is not None:
        lines += variance_report(variance, profile)
    if 3 in claims:
        lines += ["### 3. Importance sampling vs uniform t, trained on L_vlb alone", "",
                  "| sampler of t | loss noise (sd of log10 loss around its 25-step mean, 2nd half) | bits/dim |",
                  "|---|---|---|"]
        for run, label in (("vlb-uniform", "uniform"), ("vlb-importance", "importance (eq. 18)")):
            lines.append(f"| {label} | {mean_sd([loss_noise(r['loss']) for r in runs[run]])} | {bpd(run)} |")
        lines.append("")
    if 4 in claims:
        guidance = next(r for r in results if r["name"] == "guidance")["metrics"]
        lines += [f"### 4. Classifier guidance (shipped `digits` + `digits_classifier`, {profile.guidance_steps} "
                  "respaced steps)", "", "| scale s | label accuracy | precision | recall | FID |",
                  "|---|---|---|---|---|"]
        for scale, m in sorted(guidance.items(), key=lambda kv: float(kv[0])):
            lines.append(f"| {float(scale):g} | {m['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
                         f"{m['fid']:.3f} |")
        lines.append("")
    if 5 in claims:
        lines += ["### 5. Bits/dim: hybrid vs L_simple (cosine schedule)", "",
                  "| model | bits/dim | L_0 (decoder) | L_T (prior) |", "|---|---|---|---|"]
        for run, var, label in (("cosine-hybrid", "learned_range", "hybrid, learned Sigma"),
                                ("cosine-simple", "fixed_small", "L_simple, Sigma = beta-tilde"),
                                ("cosine-simple", "fixed_large", "L_simple, Sigma = beta"),
                                ("vlb-importance", "learned_range", "L_vlb, importance-sampled t")):
            parts = runs[run]
            lines.append(f"| {label} | {bpd(run, var)} | "
                         f"{mean_sd([r['bpd'][var]['decoder_bpd'] for r in parts])} | "
                         f"{mean_sd([r['bpd'][var]['prior_bpd'] for r in parts])} |")
        paired = _paired_difference(runs["cosine-simple"][0]["bpd"]["fixed_small"]["per_image"],
                                    runs["cosine-hybrid"][0]["bpd"]["learned_range"]["per_image"])
        lines += ["", f"Paired over the same images and noise (seed {profile.seeds[0]}): L_simple (beta-tilde) "
                      f"minus hybrid = {paired[0]:.3f} ± {paired[1]:.3f} bits/dim.", ""]
    return "\n".join(lines)


def _fit_summary(fit: dict) -> str:
    return (f"RMS(v - v*) {fit['rms_gap']:.3f} uniform in t, {fit['rms_gap_log']:.3f} in log t; "
            f"v(1) {fit['v'][0]:.2f} vs v*(1) {fit['v_star'][0]:.2f}")


def variance_report(variance: dict, profile: Profile) -> list[str]:
    """The markdown of claim 2: the fits, the floor, then per T the FIDs and the paired differences."""
    floor, data = variance["floor"], variance.get("data", "digits")
    what = "the `digits` preset" if data == "digits" else f"the `digits` recipe on `{data}` (its preset's U-Net)"
    lines = ["### 2. Learned vs fixed variance against sampling steps (Improved DDPM section 4, Figure 8)", "",
             f"Models: {what}, seed 0, {profile.variance_train_steps} training steps each. FID of "
             f"{profile.variance_samples} samples per seed against the held-out test images, in the digits feature "
             f"space; every variant starts from the same noise at a given seed. **Floor** "
             f"({profile.variance_samples} training images against the test images, one draw per seed): "
             f"**FID {mean_sd(floor)}**.", "",
             "Is v trained? (the variance fit after training, the default grid of ~45 t dense at both ends, "
             f"{profile.variance_fit_images} test images; RMS over t of the gap between the model's mean v and v*)",
             "", "| model | T | fit |", "|---|---|---|"]
    for key, fit in variance["fits"].items():
        kind, T = key.rsplit("-T", 1)
        label = "hybrid loss, v preconditioned" if kind == "hybrid-v" else "the paper's hybrid loss"
        lines.append(f"| {label} | {T} | {_fit_summary(fit)} |")
    pixel = variance.get("pixel")
    if pixel is not None:
        lines += ["", f"Pixel-space measures of the same samples: the **pixel Fréchet distance** (the FID formula on "
                  f"the raw pixels, against the test images; floor {mean_sd(pixel['pfd'])}) and the **total "
                  f"variance** of the samples (the sum over pixels of their variance; the test images: "
                  f"{pixel['spread']:.2f})"
                  + (f"; and the total variance of the samples' digits features (the test images: "
                     f"{pixel['feature_spread']:.2f})." if "feature_spread" in pixel else ".")]
    for T in profile.variance_chains:
        for metric in METRICS:  # the measures learned Sigma has at T (runs before a measure existed lack it)
            table = variance_table(variance["samples"], T, metric)
            if metric == "fid" or "learned" in table:
                lines += _metric_tables(table, T, METRICS[metric])
    if pixel is not None:
        steps = {T: sorted({k for v in variance_table(variance["samples"], T, "pfd").values() for k in v})
                 for T in profile.variance_chains}
        lines += gaussian_lines(steps, data)
    lines.append("")
    return lines


def gaussian_lines(steps: dict[int, list[int]], data: str = "digits") -> list[str]:
    """Markdown: the same comparison with a perfect model of Gaussian data with the mean and covariance of the
    training images of ``data``, in closed form (:func:`ddpm_lite.course.analytic.gaussian_sampler_moments`): the
    pixel Frechet distance and the total variance of the samples, for each T and its ``steps``."""
    from ddpm_lite.configs import ExperimentConfig
    from ddpm_lite.course.analytic import SAMPLER_VARIANCES, gaussian_sampler_moments
    from ddpm_lite.data import load_dataset
    from ddpm_lite.metrics import frechet_distance
    from ddpm_lite.respace import respace

    train = _pixels(load_dataset(data, "train").images)
    mean, cov = train.mean(axis=0), np.cov(train.T)
    lines = ["", f"#### A perfect model of Gaussian {data} (closed form)", "",
             f"Data N(m, C) with the mean and covariance of the {len(train)} training images (total variance "
             f"{np.trace(cov):.2f}), the exact denoiser E[x_0 | x_t], the samplers as they run (from N(0, I), no "
             "noise at the last step, no clipping): the pixel Fréchet distance to the data (total variance of the "
             "samples). Σ* per step is the best single variance of each step (what the oracle samples with), "
             "Σ* per pixel the best a model with one variance per pixel (learned Σ) can do."]
    for T, ks in steps.items():
        if not ks:
            continue
        base = ExperimentConfig.preset("digits").override({"diffusion.num_timesteps": T}).build_diffusion()
        lines += ["", f"T = {T}:", "", "| Σ | " + " | ".join(f"{k} steps" for k in ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for variance, label in SAMPLER_VARIANCES.items():
            cells = []
            for k in ks:
                m, c = gaussian_sampler_moments(respace(base, k) if k < T else base, mean, cov, variance)
                cells.append(f"{frechet_distance(m, c, mean, cov):.4f} ({np.trace(c):.2f})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _metric_tables(table: dict, T: int, title: str) -> list[str]:
    """Markdown of one measure at chain length T: its mean ± sd per variant and step count, then each variant's
    paired difference to learned Σ."""
    steps = sorted({k for v in table.values() for k in v})
    header = ["| variant | " + " | ".join(f"{k} steps" for k in steps) + " |", "|---|" + "---|" * len(steps)]
    lines = ["", f"#### T = {T}: {title} (mean ± sd over seeds; n = seeds)", "", *header]
    for variant, label in VARIANTS.items():
        if variant in table:
            values = [list(table[variant].get(k, {}).values()) for k in steps]
            lines.append(f"| {label} | " + " | ".join(f"{mean_sd(v)} (n = {len(v)})" if v else "" for v in values)
                         + " |")
    lines += ["", f"#### T = {T}: {title}, paired difference to learned Σ (variant minus learned; 95% t-interval "
                  "over seeds, paired t-test p)", "", *header]
    for variant, label in VARIANTS.items():
        if variant == "learned" or variant not in table:
            continue
        cells = []
        for k in steps:
            ours, theirs = table.get("learned", {}).get(k, {}), table[variant].get(k, {})
            common = sorted(set(ours) & set(theirs))
            test = paired_test([theirs[s] for s in common], [ours[s] for s in common])
            if test is None:
                cells.append(f"{theirs[common[0]] - ours[common[0]]:+.3f} (n = 1)" if common else "")
            else:
                mark = "**" if test["p"] < 0.05 else ""
                cells.append(f"{mark}{test['mean']:+.3f} [{test['low']:+.3f}, {test['high']:+.3f}], "
                             f"p = {test['p']:.2g}{mark}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _summary(result: dict) -> dict:
    """``result`` without the long arrays (the loss curve, the terms per t, the bits/dim per image)."""
    if "loss" not in result:
        return result
    bpd = {var: {k: v for k, v in b.items() if k not in ("vb", "per_image")} for var, b in result["bpd"].items()}
    return {**{k: v for k, v in result.items() if k != "loss"}, "bpd": bpd, "loss_noise": loss_noise(result["loss"])}


def _paired_difference(a, b) -> tuple[float, float]:
    d = np.asarray(a) - np.asarray(b)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def _profile_from_dict(d: dict) -> Profile:
    """A :class:`Profile` from its JSON (lists back to tuples, nested ones too)."""
    def tuples(v):
        return tuple(tuples(x) for x in v) if isinstance(v, list) else v

    known = {f for f in Profile.__dataclass_fields__}
    return Profile(**{k: tuples(v) for k, v in d.items() if k in known})


def merge_variance(docs: list[dict]) -> tuple[Profile, dict]:
    """One claim-2 result from the JSON of several runs of the same models, samples and seeds (profiles that
    sample different cells): (the first run's profile, the variance dict of every cell). A cell sampled by two runs
    must have the same FID in both (the noise is seeded); the floors and fits must agree too."""
    if not docs or any(d.get("variance") is None for d in docs):
        raise ValueError("--merge takes the JSON of claim-2 runs (results-<profile>-claims2.json)")
    docs = sorted(docs, key=lambda d: d.get("profile") is None)  # a job log has no profile: never first
    first = docs[0]
    if first.get("profile") is None:
        raise ValueError("--merge needs one run's results JSON besides job logs (its profile and floor)")
    same = ("variance_samples", "variance_seeds", "variance_train_steps", "variance_fit_images")
    for d in (d for d in docs[1:] if d.get("profile") is not None):
        differs = [k for k in same if d["profile"][k] != first["profile"][k]]
        if differs or not np.allclose(d["variance"]["floor"], first["variance"]["floor"]):
            raise ValueError(f"these runs differ in {', '.join(differs) or 'the floor'}: they do not pair")
    cells: dict = {}
    fits = {}
    for d in docs:
        for key, fit in d["variance"]["fits"].items():
            fits.setdefault(key, fit)
        for metric in METRICS:
            for *cell, value in sample_cells(d["variance"]["samples"], metric):
                cell = (*cell, metric)
                if cell in cells and abs(cells[cell] - value) > 1e-9 * max(1.0, abs(value)):
                    raise ValueError(f"T = {cell[0]}, {cell[1]}, seed {cell[2]}, {cell[3]} steps: {metric} "
                                     f"{cells[cell]} in one run and {value} in another: not the same models")
                cells[cell] = value
    samples: dict = {}
    for (T, variant, seed, k, metric), value in sorted(cells.items()):
        record = samples.setdefault((T, variant), {"name": "variance-sample", "T": T, "variant": variant, "fid": {}})
        record.setdefault(metric, {}).setdefault(str(seed), {})[str(k)] = value
    variance = dict(first["variance"], fits=fits, samples=list(samples.values()))  # training: the same models
    chains = sorted({T for T, _ in samples})
    profile = replace(_profile_from_dict(first["profile"]), variance_chains=tuple(chains))
    return profile, variance


def _job_log(path: Path) -> dict:
    """A run's job log (``jobs-<name>.jsonl``: the sampling jobs that finished, e.g. of a run stopped before its
    end) as a results JSON without a profile, floor or fits, for :func:`merge_variance`."""
    samples = [r for r in map(json.loads, path.read_text().splitlines()) if r.get("name") == "variance-sample"]
    return {"profile": None, "minutes": sum(r.get("minutes", 0.0) for r in samples), "machine": "the jobs of a job log",
            "variance": {"samples": samples, "fits": {}, "floor": None}}


def merge_reports(paths: list[Path], out: Path, name: str) -> str:
    """Claim 2's report, JSON and figures from the JSON of several runs (``--merge``), as ``<name>`` in ``out``."""
    docs = [_job_log(Path(p)) if Path(p).suffix == ".jsonl" else json.loads(Path(p).read_text()) for p in paths]
    profile, variance = merge_variance(docs)
    runs = [f"- `{Path(p).name}`: {d['minutes']:.1f} min; {d.get('machine', '?')}" for p, d in zip(paths, docs)]
    text = "\n".join([f"## Results: claim 2, `{name}` (merged)", "", "Merged from these runs (the same models, "
                      "samples and seeds; a cell sampled twice has the same value of every measure in both):", "",
                      *runs, "", *variance_report(variance, profile)])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results-{name}-claims2.md").write_text(text + "\n")
    (out / f"results-{name}-claims2.json").write_text(json.dumps(
        {"profile": asdict(profile), "claims": [2], "merged": [str(p) for p in paths], "variance": variance,
         "minutes": sum(d["minutes"] for d in docs)}, indent=1))
    variance_figures(variance, profile, out, name)
    return text


# --------------------------------------------------------------------------- figures


def figures(results, profile: Profile, out: Path, name: str, claims=CLAIMS, variance: dict | None = None) -> None:
    """The figures of the claims that ran, as ``<figure>-<profile name>.png`` in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ddpm_lite.course.plotting import draw_guidance_metrics, loss_curves_figure, vb_terms_figure

    runs = by_run(results)
    if 2 in claims and variance is not None:
        variance_figures(variance, profile, out, name)

    if 4 in claims:
        guidance = {float(s): m for s, m in next(r for r in results if r["name"] == "guidance")["metrics"].items()}
        floor = _evaluation_data(profile)[3]
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
        draw_guidance_metrics(ax, guidance)
        ax.set_title("classifier guidance: fidelity up, diversity down", fontsize=10)
        scales = sorted(guidance)
        ax2.plot(scales, [guidance[s]["fid"] for s in scales], "o-", color="k")
        ax2.axhline(floor, color="k", ls="--", lw=1, label="floor")
        ax2.set(xlabel="guidance scale", ylabel="digits-FID", yscale="log", title="FID against the scale")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=8)
        fig.savefig(out / f"guidance-{name}.png", dpi=120)
        plt.close(fig)

    if 5 in claims:
        hybrid = runs["cosine-hybrid"][0]["bpd"]["learned_range"]
        fig = vb_terms_figure(np.asarray(hybrid["vb"]), hybrid["prior_bpd"],
                              title=f"terms of the bound, cosine hybrid model: {hybrid['mean']:.3f} bits/dim")
        fig.savefig(out / f"vb_terms-{name}.png", dpi=120)
        plt.close(fig)

    if 3 in claims:
        fig = loss_curves_figure({label: runs[run][0]["loss"] for run, label in
                                  (("vlb-uniform", "L_vlb, uniform t"),
                                   ("vlb-importance", "L_vlb, importance-sampled t"))},
                                 smoothing=25, title="training on L_vlb alone (Improved DDPM Figure 6)")
        fig.savefig(out / f"vlb_loss-{name}.png", dpi=120)
        plt.close(fig)


VARIANT_STYLE = {  # colour, marker, line style
    "learned": ("C0", "o", "-"), "learned-paper": ("C0", "o", ":"), "oracle": ("k", "*", "-"),
    "same-small": ("C1", "s", "-"), "same-large": ("C2", "^", "-"), "simple-small": ("C1", "s", "--"),
    "simple-large": ("C2", "^", "--"), "ddim": ("C3", "D", "-"),
}


def _steps_figure(variance: dict, profile: Profile, rows, path: Path) -> None:
    """One row of panels (one per T) per (measure, axis label, reference level, its label) of ``rows``: the
    measure's mean ± sd over seeds against the sampling steps, one line per variant."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from ddpm_lite.course import style

    chains = profile.variance_chains
    with plt.rc_context(style.RC):
        fig, axes = plt.subplots(len(rows), len(chains), figsize=(8.0, 2.0 + 4.4 * len(rows)), layout="constrained",
                                 squeeze=False, sharey="row")
        for row, (metric, ylabel, level, level_label) in zip(axes, rows):
            for ax, T in zip(row, chains):
                table = variance_table(variance["samples"], T, metric)
                for variant, label in VARIANTS.items():
                    cells = table.get(variant, {})
                    steps = sorted(cells)
                    if not steps:
                        continue
                    mean = [np.mean(list(cells[k].values())) for k in steps]
                    sd = [np.std(list(cells[k].values()), ddof=1) if len(cells[k]) > 1 else 0.0 for k in steps]
                    color, marker, ls = VARIANT_STYLE[variant]
                    ax.errorbar(steps, mean, yerr=sd, color=color, marker=marker, ls=ls, ms=5, capsize=2, lw=1.3,
                                label=label)
                ax.axhline(level, color="0.4", ls="-.", lw=1, label=level_label)
                ax.set(xscale="log", yscale="linear" if metric == "spread" else "log",
                       xlabel="sampling steps (respaced)", title=f"T = {T}")
                ax.set_xticks(sorted({k for cells in table.values() for k in cells}))
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.yaxis.set_major_formatter(ScalarFormatter())
                ax.yaxis.set_minor_formatter(ScalarFormatter() if metric != "spread" else NullFormatter())
                ax.grid(alpha=0.3, which="both")
            row[0].set_ylabel(ylabel)
        handles, labels = [], []
        for row in axes:  # each row's reference line too
            for handle, label in zip(*row[0].get_legend_handles_labels()):
                if label not in labels:
                    handles.append(handle), labels.append(label)
        fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=style.FONT_PT)
        fig.savefig(path)
        plt.close(fig)


def variance_figures(variance: dict, profile: Profile, out: Path, name: str) -> None:
    """``fid_vs_steps-<name>.png`` (FID against steps, one panel per T, ± sd over seeds), with the pixel measures
    where the run has them ``pixel_vs_steps-<name>.png`` (pixel Frechet distance and total variance against
    steps), and ``variance_fit-<name>.png`` (each hybrid model's v(t) against v*(t))."""
    import matplotlib.pyplot as plt

    from ddpm_lite.course import style
    from ddpm_lite.course.plotting import variance_fit_figure
    from ddpm_lite.metrics.variance import VarianceFit

    rows = [("fid", "FID against the test set", float(np.mean(variance["floor"])), "floor (real training images)")]
    _steps_figure(variance, profile, rows, out / f"fid_vs_steps-{name}.png")
    pixel = variance.get("pixel")
    if pixel is not None and any("pfd" in r for r in variance["samples"]):
        rows = [("pfd", "pixel Fréchet distance", float(np.mean(pixel["pfd"])), "floor (real training images)"),
                ("spread", "total variance", pixel["spread"], "the test images")]
        _steps_figure(variance, profile, rows, out / f"pixel_vs_steps-{name}.png")

    if not variance["fits"]:
        return
    fits = {}
    for key, d in variance["fits"].items():
        kind, T = key.rsplit("-T", 1)
        fits[f"T = {T}, {'preconditioned' if kind == 'hybrid-v' else 'paper'}"] = VarianceFit.from_dict(d)
    fig = variance_fit_figure(fits, title="is v trained? learned v(t) (solid) against v*(t) (dashed)")
    ax = fig.axes[0]  # the legend below the axes: inside, it hides the flat v of the paper's loss (~0.77)
    handles, labels = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    fig.set_size_inches(7.5, 4.2 + 0.28 * len(labels))
    fig.legend(handles, labels, loc="outside lower center", ncol=1, fontsize=style.FONT_PT)
    fig.savefig(out / f"variance_fit-{name}.png")
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _parse_claims(text: str) -> tuple[int, ...]:
    try:
        claims = tuple(sorted({int(c) for c in text.split(",")}))
    except ValueError:
        claims = ()
    if not claims or not set(claims) <= set(CLAIMS):
        raise argparse.ArgumentTypeError(f"--claims takes a comma-separated subset of 1-5, e.g. 2 or 1,3; got "
                                         f"{text!r}")
    return claims


def _run(pool, jobs: list, log: Path | None) -> list:
    """The results of ``jobs`` in their order; each claim-2 result is also appended to ``log`` when it arrives."""
    results = [None] * len(jobs)
    for i, result in pool.imap_unordered(_indexed_job, list(enumerate(jobs)), chunksize=1):
        results[i] = result
        if log is not None and result["name"].startswith("variance"):
            with log.open("a") as f:
                f.write(json.dumps(result) + "\n")
    return results


def _indexed_job(item):
    i, job = item
    return i, _job(job)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick profile (under 15 minutes on 2 cores)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="a profile by name (--quick = quick)")
    parser.add_argument("--claims", type=_parse_claims, default=CLAIMS, help="which claims to run (default all)")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once, one thread each")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "claims", help="report, JSON and figures")
    parser.add_argument("--work", type=Path, help="claim 2's trained models (default runs/claims-<profile>)")
    parser.add_argument("--data", default="digits",
                        help="claim 2 only: the dataset (digits; digits16 or digits28, the digits upsampled; mnist or "
                             "fashion_mnist on a GPU, from --root/$DDPM_LITE_DATA), with its preset's U-Net")
    parser.add_argument("--device", default="cpu", help="claim 2 only: cpu or cuda (then use --workers 1)")
    parser.add_argument("--reuse", action="store_true",
                        help="claim 2: use the models an earlier run left in --work (same config) instead of "
                             "training them again")
    parser.add_argument("--chains", type=int, nargs="+", metavar="T",
                        help="claim 2 only: these of the profile's chain lengths (a run per T can go side by side "
                             "with the others; --merge joins their reports)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), metavar="VARIANT",
                        help=f"claim 2 only: sample these variants of the profile's ({', '.join(VARIANTS)})")
    parser.add_argument("--steps", type=int, nargs="+", metavar="K",
                        help="claim 2 only: sample these step counts instead of the profile's (a run of some cells, "
                             "for --merge)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="run nothing: join the claim-2 JSON of several runs into one report (named --name)")
    parser.add_argument("--name", default="merged", help="with --merge: the merged report's name")
    args = parser.parse_args(argv)
    if args.merge:
        try:
            print(merge_reports(args.merge, args.out, args.name))
        except (OSError, ValueError, KeyError) as error:
            parser.exit(2, f"claims.py --merge: {error}\n")
        return
    name = args.profile or ("quick" if args.quick else "full")
    profile, claims, data, device = PROFILES[name], args.claims, args.data, args.device
    if (data != "digits" or device != "cpu") and claims != (2,):
        parser.error("--data and --device apply to claim 2 alone: add --claims 2")
    tag = name if data == "digits" else f"{name}-{data}"  # in the names of the files written
    work = args.work or ROOT / "runs" / f"claims-{tag}"
    if args.chains:
        unknown = set(args.chains) - set(profile.variance_chains)
        if claims != (2,) or unknown:
            parser.error(f"--chains applies to claim 2 alone (add --claims 2) and takes chain lengths of the "
                         f"{name} profile: {', '.join(map(str, profile.variance_chains))}")
        profile = replace(profile, variance_chains=tuple(sorted(args.chains)))
        tag += "-T" + "-".join(map(str, profile.variance_chains))
    if args.variants:
        if claims != (2,):
            parser.error("--variants applies to claim 2 alone: add --claims 2")
        chosen = [v for v in VARIANTS if v in args.variants and (profile.variance_variants is None
                                                                  or v in profile.variance_variants)]
        profile = replace(profile, variance_variants=tuple(chosen))
        tag += "-" + "-".join(chosen)
    if args.steps:
        if claims != (2,) or min(args.steps) < 1:
            parser.error("--steps applies to claim 2 alone (add --claims 2) and takes positive step counts")
        profile = replace(profile, variance_steps=tuple(sorted(set(args.steps))), variance_extra_steps=(),
                          variance_long_steps=())
        tag += "-steps-" + "-".join(map(str, profile.variance_steps))
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    trained = [run for run in RUNS if any(run in CLAIM_RUNS.get(c, ()) for c in claims)]
    # claim 2's hybrid and L_simple models for T = 1000 are the runs cosine-hybrid and cosine-simple (seed 0)
    # when those are trained for as many steps: train them once
    shared = {}
    if 2 in claims and 1000 in profile.variance_chains and profile.variance_train_steps == profile.steps \
            and 0 in profile.seeds:
        shared = {run: kind for run, kind in (("cosine-hybrid", "hybrid"), ("cosine-simple", "simple"))
                  if run in trained}
    jobs = [("train", run, seed, profile, (shared[run], work) if seed == 0 and run in shared else None)
            for seed in profile.seeds for run in trained]
    if 2 in claims:
        jobs += [("vtrain", kind, T, profile, work, args.reuse, data, device) for T in profile.variance_chains
                 for kind in variance_models(profile, T) if not (T == 1000 and kind in shared.values())]
    if 4 in claims:
        jobs.append(("guidance", profile))
    print(f"{name} profile, claims {', '.join(map(str, claims))}: {len(jobs)} jobs on {args.workers} workers",
          flush=True)
    context = multiprocessing.get_context("spawn")
    log = work / f"jobs-{tag}.jsonl" if 2 in claims else None  # claim 2's results as they come (for hours)
    if log is not None:
        work.mkdir(parents=True, exist_ok=True)
        log.write_text("")
    with context.Pool(args.workers, maxtasksperchild=1) as pool:
        results = _run(pool, jobs, log)
    variance = None
    if 2 in claims:
        fits = fit_variance_models(profile, work, data, device, reuse=args.reuse)
        sampling = variance_sampling_jobs(profile, work, data, device)
        print(f"claim 2: {len(sampling)} sampling jobs", flush=True)
        with context.Pool(args.workers) as pool:  # the workers live on (no import per job)
            samples = _run(pool, sampling, log)
        training = [r for r in results if r["name"] == "variance-model"]
        training += [json.loads(_model_path(work, kind, 1000).with_suffix(".json").read_text())
                     for kind in shared.values()]
        variance = {"fits": fits, "floor": variance_floor(profile, data), "pixel": pixel_floor(profile, data),
                    "samples": samples, "training": training, "data": data, "device": device}
        results = [r for r in results if r["name"] != "variance-model"]
    floor = _evaluation_data(profile)[3] if set(claims) & {1, 3, 4, 5} else None
    minutes = (time.perf_counter() - start) / 60
    text = report(results, profile, floor, name, minutes, claims, variance)
    suffix = "" if claims == CLAIMS else "-claims" + "".join(map(str, claims))
    (args.out / f"results-{tag}{suffix}.md").write_text(text + "\n")
    slim = [_summary(r) for r in results]
    (args.out / f"results-{tag}{suffix}.json").write_text(json.dumps(
        {"profile": asdict(profile), "claims": list(claims), "floor": floor, "minutes": minutes, "results": slim,
         "variance": variance, "machine": describe()}, indent=1))
    figures(results, profile, args.out, tag, claims, variance)
    print(text)


if __name__ == "__main__":
    main()
