"""The talk's claims, reproduced on the 8x8 digits: Improved DDPM's changes and the guidance trade-off.

    python bench/claims.py --quick      # about 12 minutes on 2 cores: 600 steps, 1 seed, small evaluations
    python bench/claims.py              # the full profile: 2,000 steps (as the shipped models), 2 seeds, 75-95 min

Every model is the ``digits`` preset (the shipped unconditional model's config: ADM U-Net, cosine schedule,
learned variance, hybrid loss, batch 128) with one thing changed, trained for the same number of steps:

============== =========================================================== =====================
run            change from the ``digits`` preset                           claims
============== =========================================================== =====================
cosine-hybrid  none                                                        1, 2, 5
linear-hybrid  linear schedule (DDPM)                                      1
cosine-simple  L_simple, fixed variances (DDPM): beta-tilde and beta       2, 5
vlb-uniform    trained on L_vlb alone (``rescaled_kl``), t uniform         3
vlb-importance trained on L_vlb alone, t importance-sampled (eq. 18)       3
============== =========================================================== =====================

1. cosine vs linear schedule: bits/dim and FID (Improved DDPM section 3.2);
2. learned variance (hybrid) vs fixed variances (L_simple): FID against respaced sampling steps (section 4);
3. importance sampling vs uniform t on L_vlb: the training loss's noise and the final bits/dim (section 3.3);
4. classifier guidance scale 0 to 10 (Dhariwal & Nichol, Algorithm 1), with the shipped unconditional model
   and noisy classifier (``make checkpoints`` trains them from their presets, 2,000 steps): label accuracy,
   precision and recall (Kynkaanniemi et al.), FID;
5. bits/dim of the hybrid model vs the L_simple model (Table 1 and 2).

Measures: bits/dim of the variational bound on the first test digits (every one of the 1,000 terms; the same
x_t noise for every model, so differences are paired) with its standard error over images; digits-FID of
samples (ancestral, EMA weights, the same starting noise for every model) against the training digits, in the
feature space of the shipped digits network, beside the floor: as many real test digits against the same
training digits. Error bars: the spread over seeds (full profile) or, for bits/dim, the standard error over images.

Runs go two at a time in worker processes of one thread each (``--workers``). Results: a markdown report, a JSON
file and four figures in ``--out`` (default ``docs/claims/``), named after the profile: ``fid_vs_steps-quick.png``,
``guidance-quick.png``, ``vb_terms-quick.png`` and ``vlb_loss-quick.png`` (the L_vlb training curves).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass
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


PROFILES = {
    "quick": Profile(steps=600, seeds=(0,), bpd_images=48, fid_samples=200, fid_steps=(10, 25, 50, 100),
                     guidance_scales=(0, 1, 2, 4, 6, 10), guidance_steps=25),
    "full": Profile(steps=2000, seeds=(0, 1), bpd_images=128, fid_samples=360,
                    fid_steps=(10, 25, 50, 100, 250, 1000), guidance_scales=(0, 0.5, 1, 2, 3, 4, 6, 8, 10),
                    guidance_steps=50),
    # seconds: only checks that the script runs end to end (the tests use it)
    "smoke": Profile(steps=2, seeds=(0,), bpd_images=2, fid_samples=12, fid_steps=(2, 3), guidance_scales=(0, 2),
                     guidance_steps=2),
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
FID_RUNS = ("cosine-hybrid", "linear-hybrid", "cosine-simple")


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


def train_and_evaluate(name: str, seed: int, profile: Profile) -> dict:
    """Train run ``name`` with ``seed`` and score it: bits/dim, FID against steps, the loss history."""
    from ddpm_lite.configs import ExperimentConfig
    from ddpm_lite.course.fast_sampling import sample_with
    from ddpm_lite.course.learned_variance import with_variance
    from ddpm_lite.metrics import bits_per_dim, extract_features, fid_from_features
    from ddpm_lite.train import Trainer

    torch.set_num_threads(1)
    start = time.perf_counter()
    net, train_features, bpd_images, _ = _evaluation_data(profile)
    config = ExperimentConfig.preset("digits", seed=seed, save_every=profile.steps).override(RUNS[name])
    trainer = Trainer.from_config(config, device="cpu", progress=False)
    trainer.train(profile.steps)
    train_minutes = (time.perf_counter() - start) / 60
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


def _job(job):
    kind, *args = job
    return guidance_sweep(*args) if kind == "guidance" else train_and_evaluate(*args)


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


def report(results, profile: Profile, floor: float, name: str, minutes: float) -> str:
    runs = by_run(results)
    guidance = next(r for r in results if r["name"] == "guidance")["metrics"]
    seeds = ", ".join(map(str, profile.seeds))
    steps_cols = [("all" if s == 1000 else str(s)) for s in profile.fid_steps]
    lines = [f"## Results: `--{name}` profile", "",
             f"{describe()}. {len(RUNS)} runs x {len(profile.seeds)} seed(s) ({seeds}), {profile.steps} training "
             f"steps each at batch 128; {minutes:.1f} min in all. Bits/dim on the first {profile.bpd_images} test "
             f"digits (± standard error over images for one seed, ± sd over seeds otherwise); FID of "
             f"{profile.fid_samples} samples against the training digits. **Floor** ({profile.fid_samples} real "
             f"test digits): **FID {floor:.3f}**.", ""]

    def bpd(run, var=None):
        rs = runs[run]
        var = var or next(iter(rs[0]["bpd"]))
        if len(rs) == 1:
            b = rs[0]["bpd"][var]
            return f"{b['mean']:.3f} ± {b['stderr']:.3f}"
        return mean_sd([r["bpd"][var]["mean"] for r in rs])

    def fid(run, var, steps):
        return mean_sd([r["fid"][var][steps] for r in runs[run]])

    lines += ["### 1. Cosine vs linear schedule (hybrid loss, learned variance)", "",
              "| schedule | bits/dim | " + " | ".join(f"FID, {c} steps" for c in steps_cols) + " |",
              "|---|---|" + "---|" * len(steps_cols)]
    for run, label in (("linear-hybrid", "linear"), ("cosine-hybrid", "cosine")):
        lines.append(f"| {label} | {bpd(run)} | " + " | ".join(fid(run, "learned_range", s)
                                                               for s in profile.fid_steps) + " |")
    lines += ["", "### 2. Learned vs fixed variance: FID against sampling steps", "",
              "| model, variance | " + " | ".join(f"{c} steps" for c in steps_cols) + " |",
              "|---|" + "---|" * len(steps_cols)]
    for run, var, label in (("cosine-hybrid", "learned_range", "hybrid, learned Sigma (Improved DDPM)"),
                            ("cosine-simple", "fixed_small", "L_simple, Sigma = beta-tilde (DDPM)"),
                            ("cosine-simple", "fixed_large", "L_simple, Sigma = beta (DDPM)")):
        lines.append(f"| {label} | " + " | ".join(fid(run, var, s) for s in profile.fid_steps) + " |")
    lines += ["", "### 3. Importance sampling vs uniform t, trained on L_vlb alone", "",
              "| sampler of t | loss noise (sd of log10 loss around its 25-step mean, 2nd half) | bits/dim |",
              "|---|---|---|"]
    for run, label in (("vlb-uniform", "uniform"), ("vlb-importance", "importance (eq. 18)")):
        lines.append(f"| {label} | {mean_sd([loss_noise(r['loss']) for r in runs[run]])} | {bpd(run)} |")
    lines += ["", f"### 4. Classifier guidance (shipped `digits` + `digits_classifier`, {profile.guidance_steps} "
                  "respaced steps)", "", "| scale s | label accuracy | precision | recall | FID |",
              "|---|---|---|---|---|"]
    for scale, m in sorted(guidance.items(), key=lambda kv: float(kv[0])):
        lines.append(f"| {float(scale):g} | {m['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
                     f"{m['fid']:.3f} |")
    lines += ["", "### 5. Bits/dim: hybrid vs L_simple (cosine schedule)", "",
              "| model | bits/dim | L_0 (decoder) | L_T (prior) |", "|---|---|---|---|"]
    for run, var, label in (("cosine-hybrid", "learned_range", "hybrid, learned Sigma"),
                            ("cosine-simple", "fixed_small", "L_simple, Sigma = beta-tilde"),
                            ("cosine-simple", "fixed_large", "L_simple, Sigma = beta"),
                            ("vlb-importance", "learned_range", "L_vlb, importance-sampled t")):
        parts = runs[run]
        lines.append(f"| {label} | {bpd(run, var)} | {mean_sd([r['bpd'][var]['decoder_bpd'] for r in parts])} | "
                     f"{mean_sd([r['bpd'][var]['prior_bpd'] for r in parts])} |")
    paired = _paired_difference(runs["cosine-simple"][0]["bpd"]["fixed_small"]["per_image"],
                                runs["cosine-hybrid"][0]["bpd"]["learned_range"]["per_image"])
    lines += ["", f"Paired over the same images and noise (seed {profile.seeds[0]}): L_simple (beta-tilde) minus "
                  f"hybrid = {paired[0]:.3f} ± {paired[1]:.3f} bits/dim.", ""]
    return "\n".join(lines)


def _summary(result: dict) -> dict:
    """``result`` without the long arrays (the loss curve, the terms per t, the bits/dim per image)."""
    if "loss" not in result:
        return result
    bpd = {var: {k: v for k, v in b.items() if k not in ("vb", "per_image")} for var, b in result["bpd"].items()}
    return {**{k: v for k, v in result.items() if k != "loss"}, "bpd": bpd, "loss_noise": loss_noise(result["loss"])}


def _paired_difference(a, b) -> tuple[float, float]:
    d = np.asarray(a) - np.asarray(b)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


# --------------------------------------------------------------------------- figures


def figures(results, profile: Profile, floor: float, out: Path, name: str) -> None:
    """The four figures, as ``<figure>-<profile name>.png`` in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ddpm_lite.course.plotting import draw_guidance_metrics, loss_curves_figure, vb_terms_figure

    runs = by_run(results)
    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    for run, var, label in (("cosine-hybrid", "learned_range", "cosine, hybrid, learned Σ"),
                            ("linear-hybrid", "learned_range", "linear, hybrid, learned Σ"),
                            ("cosine-simple", "fixed_small", "cosine, L_simple, Σ = β̃"),
                            ("cosine-simple", "fixed_large", "cosine, L_simple, Σ = β")):
        fids = np.array([[r["fid"][var][s] for s in profile.fid_steps] for r in runs[run]])
        ax.errorbar(profile.fid_steps, fids.mean(0), yerr=fids.std(0, ddof=1) if len(fids) > 1 else None,
                    marker="o", ms=4, capsize=3, label=label)
    ax.axhline(floor, color="k", ls="--", lw=1, label=f"floor (real test digits): {floor:.2f}")
    ax.set(xscale="log", yscale="log", xlabel="sampling steps (respaced)", ylabel="digits-FID",
           title=f"FID against sampling steps, {profile.steps} training steps")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.savefig(out / f"fid_vs_steps-{name}.png", dpi=120)
    plt.close(fig)

    guidance = {float(s): m for s, m in next(r for r in results if r["name"] == "guidance")["metrics"].items()}
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

    hybrid = runs["cosine-hybrid"][0]["bpd"]["learned_range"]
    fig = vb_terms_figure(np.asarray(hybrid["vb"]), hybrid["prior_bpd"],
                          title=f"terms of the bound, cosine hybrid model: {hybrid['mean']:.3f} bits/dim")
    fig.savefig(out / f"vb_terms-{name}.png", dpi=120)
    plt.close(fig)

    fig = loss_curves_figure({label: runs[run][0]["loss"] for run, label in
                              (("vlb-uniform", "L_vlb, uniform t"), ("vlb-importance", "L_vlb, importance-sampled t"))},
                             smoothing=25, title="training on L_vlb alone (Improved DDPM Figure 6)")
    fig.savefig(out / f"vlb_loss-{name}.png", dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick profile (about 12 minutes on 2 cores)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="a profile by name (--quick = quick)")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once, one thread each")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "claims", help="report, JSON and figures")
    args = parser.parse_args(argv)
    name = args.profile or ("quick" if args.quick else "full")
    profile = PROFILES[name]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = [("train", run, seed, profile) for seed in profile.seeds for run in RUNS] + [("guidance", profile)]
    print(f"{name} profile: {len(jobs)} jobs on {args.workers} workers", flush=True)
    with multiprocessing.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        results = pool.map(_job, jobs, chunksize=1)
    floor = _evaluation_data(profile)[3]
    minutes = (time.perf_counter() - start) / 60
    text = report(results, profile, floor, name, minutes)
    (args.out / f"results-{name}.md").write_text(text + "\n")
    slim = [_summary(r) for r in results]
    (args.out / f"results-{name}.json").write_text(json.dumps({"profile": asdict(profile), "floor": floor,
                                                               "minutes": minutes, "results": slim}, indent=1))
    figures(results, profile, floor, args.out, name)
    print(text)


if __name__ == "__main__":
    main()
