"""Can the digits model's v(t) be trained to track v*(t)? The attempts of docs/claims.md (claim 2), and their report.

    python bench/variance_training.py train NAME [options]    # one attempt; runs/vstudy/NAME/ (not committed)
    python bench/variance_training.py report NAME...          # refit the attempts' final weights, write the report

The attempts, as they were run (2026-11-30, 2 shared cores; the first five fine-tune the shipped ``digits`` model,
its EMA weights, with a fresh AdamW; the others start from scratch):

=====================  =====================================================================================
name                   options
=====================  =====================================================================================
ft_long2k              ``--init shipped --steps 2000``: the paper's hybrid loss, 2,000 more steps (4,000 in all)
ft_head30              ``--init shipped --steps 500 --head 30``: 30 times the AdamW step of v's output weights
ft_precond             ``--init shipped --steps 1000 --precond 1000``: the L_vlb term of step t weighted by
                       mean(delta^2) / delta_t^2 (the same pull toward v* at every t, and on average as strong)
ft_precond_unnorm      ``--init shipped --steps 1000 --precond 1e6 --unnorm``: weighted by 1 / delta_t^2
                       (curvature 1/2 at every t), capped at 1e6 (stopped after 750 steps)
ft_pc_dmin             ``--init shipped --steps 1000 --precond 1e12 --unnorm --dmin 1e-4``: 1 / delta_t^2 where
                       delta_t >= 1e-4, 1 elsewhere (stopped after 250 steps)
ft_pc_clip             ``--init shipped --steps 1000 --precond 1e12 --unnorm --clip-vb``: 1 / delta_t^2, and the
                       term computed with the clipped x0_hat of the sampler
s4k_paper, s4k_pc      ``--T 4000 --steps 2000 [--precond 1e12 --unnorm --clip-vb]`` from scratch (stopped after
                       500 steps: the same models are trained to the end by ``bench/claims.py --claims 2``)
=====================  =====================================================================================

delta_t = log(beta_t / beta~_t) (see :mod:`ddpm_lite.metrics.variance`). ``bench/claims.py`` trains its
``hybrid-v`` models with the last recipe (:class:`claims.VPreconditionedDiffusion`, which gives t = 0 its own
weight instead of t = 1's). ``report`` writes ``docs/claims/variance_training.{md,json,png}``: each attempt's
diagnostic as it was logged during training, and a refit of its final weights with the current diagnostic.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "vstudy"


def preconditioned(base, cap: float, norm: bool = True, dmin: float = 0.0, clip_vb: bool = False):
    """A copy of ``base`` whose hybrid loss weights the L_vlb term of step t by (mean(delta^2) if ``norm`` else 1)
    / delta_t^2, capped at ``cap`` (weight 1 where delta_t < ``dmin``); ``clip_vb``: the term with the clipped
    x0_hat (and L_simple computed here, for an eps model)."""
    from claims import clipped_hybrid_terms  # bench/claims.py

    from ddpm_lite.gaussian_diffusion import GaussianDiffusion

    class PreconditionedVB(GaussianDiffusion):
        def training_losses(self, model, x_start, t, noise=None, model_kwargs=None):
            weights = self.vb_weights.to(t.device)[t]
            if clip_vb:
                mse, vb = clipped_hybrid_terms(self, model, x_start, t, noise, model_kwargs)
                return {"mse": mse, "vb": vb * weights, "loss": mse + vb * weights}
            terms = super().training_losses(model, x_start, t, noise, model_kwargs)
            if "vb" in terms:
                terms["vb"] = terms["vb"] * weights
                terms["loss"] = terms["mse"] + terms["vb"]
            return terms

    d = PreconditionedVB(base.betas, base.mean_type, base.var_type, base.loss_type)
    delta = np.log1p(d.betas ** 2 * d.alphas_cumprod_prev / (1 - d.alphas_cumprod)
                     / np.where(d.posterior_variance > 0, d.posterior_variance, np.inf))
    delta[0] = delta[1]
    w = (np.mean(delta ** 2) if norm else 1.0) / delta ** 2
    if dmin:
        w = np.where(delta >= dmin, w, 1.0)
    d.vb_weights = torch.from_numpy(np.minimum(w, cap)).float()
    return d


def boost_variance_head(trainer, factor: float) -> None:
    """Multiply each AdamW update of the variance half of the last convolution by ``factor`` (step hooks)."""
    conv = trainer.model.out[-1]
    c = conv.out_channels // 2
    saved = {}

    def pre(opt, args, kwargs):
        saved["w"], saved["b"] = conv.weight.detach()[c:].clone(), conv.bias.detach()[c:].clone()

    def post(opt, args, kwargs):
        with torch.no_grad():
            conv.weight[c:] += (factor - 1) * (conv.weight[c:] - saved["w"])
            conv.bias[c:] += (factor - 1) * (conv.bias[c:] - saved["b"])

    trainer.optimizer.register_step_pre_hook(pre)
    trainer.optimizer.register_step_post_hook(post)


def train(args) -> None:
    from ddpm_lite.configs import ExperimentConfig
    from ddpm_lite.data import load_dataset
    from ddpm_lite.metrics.variance import log_variance_fit
    from ddpm_lite.train import Trainer, every

    torch.set_num_threads(1)
    out = RUNS / args.name
    out.mkdir(parents=True, exist_ok=True)
    changes = {"diffusion.num_timesteps": args.T, "lr": args.lr, "save_every": args.steps}
    if args.T != 1000:
        changes["diffusion.loss_type"] = "rescaled_mse"
    config = ExperimentConfig.preset("digits", seed=args.seed).override(changes)
    fits = log_variance_fit(load_dataset("digits", "test").images[:256], verbose=True)
    trainer = Trainer.from_config(config, device="cpu", progress=False, checkpoint_path=out / "checkpoint.pt",
                                  callbacks=[every(args.every, fits)])
    if args.init == "shipped":
        from ddpm_lite.pretrained import load_pretrained

        shipped, _, _ = load_pretrained("digits", device="cpu")
        trainer.model.load_state_dict(shipped.state_dict())
        trainer.ema.load_state_dict(shipped.state_dict())
    if args.precond:
        trainer.diffusion = trainer.objective.diffusion = preconditioned(
            trainer.diffusion, args.precond, norm=not args.unnorm, dmin=args.dmin, clip_vb=args.clip_vb)
    if args.head != 1:
        boost_variance_head(trainer, args.head)
    start = time.perf_counter()
    trainer.train(args.steps)
    minutes = (time.perf_counter() - start) / 60
    result = {"args": vars(args), "minutes": minutes, "loss_tail": float(np.mean(trainer.loss_history[-200:])),
              "fits": [f.to_dict() for f in fits.fits],
              "rms": [(f.step, f.rms_gap, f.rms_gap_log, f.excess_bpd) for f in fits.fits]}
    (out / "result.json").write_text(json.dumps(result))
    print("done", args.name, f"{minutes:.1f} min", result["rms"][-1:])


LABELS = {
    "shipped": "the paper's hybrid loss, 2,000 steps (shipped)",
    "ft_long2k": "+2,000 steps, the same loss",
    "ft_head30": "+500 steps, 30x step on v's output weights",
    "ft_precond": "+1,000 steps, L_vlb term / δ_t², mean weight kept",
    "ft_pc_clip": "+1,000 steps, L_vlb term / δ_t², clipped x̂0",
}


def report(names: list[str], out: Path) -> None:
    """Refit each attempt's final EMA weights (``shipped``: the shipped model) and write the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from machine import describe  # bench/machine.py

    from ddpm_lite.checkpoint import load_checkpoint
    from ddpm_lite.configs import ExperimentConfig
    from ddpm_lite.course import style
    from ddpm_lite.data import load_dataset
    from ddpm_lite.metrics.variance import variance_fit
    from ddpm_lite.pretrained import load_pretrained

    torch.set_num_threads(1)
    test = load_dataset("digits", "test").images[:256]
    fits, logged = {}, {}
    for name in names:
        if name == "shipped":
            model, diffusion, _ = load_pretrained("digits", device="cpu")
        else:
            state = load_checkpoint(RUNS / name / "checkpoint.pt")
            config = ExperimentConfig.from_dict(state["config"])
            model = config.build_model()
            model.load_state_dict(state["ema"])
            diffusion = config.build_diffusion()
            logged[name] = json.loads((RUNS / name / "result.json").read_text())["rms"]
        fits[name] = variance_fit(model.eval(), diffusion, test)
        print(name, fits[name].summary(), flush=True)
    lines = [f"{describe()}. Refit of each attempt's final EMA weights: 256 test digits, the default grid.", "",
             "| attempt | RMS(v - v*), uniform in t | in log t | v (min..max) | bits/dim vs Sigma* |",
             "|---|---|---|---|---|"]
    for name, fit in fits.items():
        lines.append(f"| {LABELS.get(name, name)} | {fit.rms_gap:.3f} | {fit.rms_gap_log:.3f} | "
                     f"{np.nanmin(fit.v):.2f}..{np.nanmax(fit.v):.2f} | {fit.excess_bpd:+.4f} |")
    (out / "variance_training.md").write_text("\n".join(lines) + "\n")
    (out / "variance_training.json").write_text(json.dumps(
        {"machine": describe(), "fits": {k: f.to_dict() for k, f in fits.items()}, "logged": logged}, indent=1))
    with plt.rc_context(style.RC):
        fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
        first = next(iter(fits.values()))
        ok = first.t > 0
        ax.plot(first.t[ok], first.v_star[ok], "k--", lw=2, label="v* of the shipped model (KL-optimal)")
        for i, (name, fit) in enumerate(fits.items()):
            ax.plot(fit.t[ok], fit.v[ok], "-", color=f"C{i}", lw=2,
                    label=f"{LABELS.get(name, name)} (RMS gap {fit.rms_gap:.2f})")
        ax.set(xscale="log", ylim=(0, 1.5), xlabel="timestep t", ylabel=r"v   (0: $\tilde\beta_t$,  1: $\beta_t$)",
               title="training v on the 8x8 digits (T = 1000): learned v(t) against v*(t)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=style.FONT_PT, loc="upper left")
        fig.savefig(out / "variance_training.png")
    print("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="one attempt")
    t.add_argument("name")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--T", type=int, default=1000)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--head", type=float, default=1.0, help="multiply the update of v's output weights")
    t.add_argument("--precond", type=float, default=0.0, help="weight the L_vlb term by 1/delta_t^2, capped here")
    t.add_argument("--unnorm", action="store_true", help="1/delta_t^2, not mean(delta^2)/delta_t^2")
    t.add_argument("--clip-vb", action="store_true", help="the L_vlb term with the clipped x0_hat")
    t.add_argument("--dmin", type=float, default=0.0, help="weight 1 where delta_t < dmin")
    t.add_argument("--every", type=int, default=250, help="log the variance fit every N steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init", choices=["shipped"], help="start from the shipped digits model's EMA weights")
    r = sub.add_parser("report", help="refit the attempts and write docs/claims/variance_training.*")
    r.add_argument("names", nargs="+", help="attempt names under runs/vstudy/, and 'shipped'")
    r.add_argument("--out", type=Path, default=ROOT / "docs" / "claims")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
    else:
        report(args.names, args.out)


if __name__ == "__main__":
    main()
