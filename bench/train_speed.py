"""Training and sampling speed of the digits U-Nets, side by side with diffusers' ``UNet2DModel``.

    python bench/train_speed.py                    # speed at 8x8 and 16x16, 2 threads (about 4 minutes)
    python bench/train_speed.py --threads 1 --sizes 8
    python bench/train_speed.py --quality --no-speed --threads 1   # FID after 1,000 and 2,000 steps (~25 min)

What is measured, on the CPU, in one process, our model and diffusers' interleaved round by round so that a
shared machine slows both alike (process CPU time per step, median over rounds):

* **training images/s**: one step = forward, the loss, backward and AdamW, batch 128. Our U-Net is the
  ``digits8`` / ``digits16`` preset with a learned variance (2 output channels); diffusers' has the same widths,
  levels, attention resolutions, head width, dropout and output channels, one layer per block. A third row is our
  U-Net with plain up/downsampling convolutions (``resblock_updown=False``, as diffusers and Improved DDPM) in place
  of ADM's residual ones: the same architecture as diffusers', so the comparison of the two code bases;
* **GFLOP per step** (torch's FLOP counter) and the GFLOP/s each achieves: how much work, and how fast it is done;
* **time per reverse step** (batch 64): our ``GaussianDiffusion.p_sample`` against diffusers' U-Net plus
  ``DDPMScheduler.step`` (learned-range variance), at a middle timestep, without gradients;
* **the first 10 training steps** of a freshly initialised model, each against the steady step (on the CPU,
  denormal numbers or one-time kernel setup can make early steps slow);
* **memory format**: our training step in NCHW and in channels_last;
* **respaced sampling**: 64 digits with 50 respaced steps of the shipped ``digits`` model, wall-clock.

``--quality`` trains both networks with the same :class:`~ddpm_lite.train.Trainer`, data, diffusion (the
``digits`` preset: cosine schedule, hybrid loss), seed and hyper-parameters, and reports the digits-FID
(``ddpm_lite.metrics``, the shipped digits feature network) of 360 samples (``--sample-steps`` respaced
ancestral steps, EMA weights) against the training digits after 1,000 and 2,000 steps, beside the floor: the 360
real held-out test digits against the same training digits.

diffusers is not a dependency of ddpm_lite: the first run installs it with pip into ``build/bench-deps`` (needs
the package registry) and appends that folder to ``sys.path``, so the project's own numpy and torch stay in use.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import multiprocessing
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import describe  # bench/machine.py
from torch.utils.flop_counter import FlopCounterMode

from ddpm_lite.configs import ExperimentConfig
from ddpm_lite.course.fast_sampling import sample_with, time_sampler
from ddpm_lite.models import UNetConfig, UNetModel
from ddpm_lite.pretrained import load_pretrained

ROOT = Path(__file__).resolve().parent.parent
DEPS = ROOT / "build" / "bench-deps"
TRAIN_BATCH, SAMPLE_BATCH = 128, 64
PRESETS = {8: "digits8", 16: "digits16"}
PLAIN = "ours, plain resampling"  # resblock_updown=False: diffusers' (and Improved DDPM's) up/down convolutions
NAMES = ("ours", PLAIN, "diffusers")


# --------------------------------------------------------------------------- diffusers, installed for the bench


def import_diffusers():
    """diffusers' UNet2DModel and DDPMScheduler, pip-installed into build/bench-deps on first use."""
    if not (DEPS / "diffusers").exists():
        print(f"installing diffusers into {DEPS} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(DEPS), "diffusers"],
                       check=True)
    if str(DEPS) not in sys.path:
        sys.path.append(str(DEPS))  # appended: our numpy and torch come first
    import diffusers
    from diffusers import DDPMScheduler, UNet2DModel

    return diffusers.__version__, UNet2DModel, DDPMScheduler


class DiffusersDenoiser(torch.nn.Module):
    """diffusers' UNet2DModel with our calling convention ``model(x_t, t) -> tensor``."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, **kwargs):
        return self.unet(x, t).sample


def diffusers_twin(cfg: UNetConfig, UNet2DModel) -> torch.nn.Module:
    """diffusers' U-Net with the widths, levels, attention, head width, dropout and outputs of ``cfg``."""
    attn = [res in cfg.attention_resolutions for res in cfg.resolutions]
    widths = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    unet = UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.model_out_channels,
        block_out_channels=widths, layers_per_block=cfg.num_res_blocks, dropout=cfg.dropout,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=cfg.num_head_channels, norm_num_groups=min(32, min(widths)),
        resnet_time_scale_shift="scale_shift")
    return DiffusersDenoiser(unet)


# --------------------------------------------------------------------------- timing


def cpu_seconds(fn) -> float:
    """Process CPU time of one call (robust to other processes sharing the cores) divided by threads in use."""
    start = time.process_time()
    fn()
    return (time.process_time() - start) / torch.get_num_threads()


def train_step_fn(model: torch.nn.Module, size: int, channels_last: bool = False):
    """A closure running one training step (forward, MSE loss, backward, AdamW) on a fixed random batch."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(TRAIN_BATCH, 1, size, size, generator=g)
    target = torch.randn(TRAIN_BATCH, 2, size, size, generator=g)
    t = torch.randint(0, 1000, (TRAIN_BATCH,), generator=g)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def step():
        loss = F.mse_loss(model(x, t), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def interleaved(fns: dict[str, callable], rounds: int, per_round: int = 3, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternating rounds of ``per_round`` calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(cpu_seconds(lambda fn=fn: [fn() for _ in range(per_round)]) / per_round)
    return {name: statistics.median(ts) for name, ts in times.items()}


def make_model(name: str, cfg: UNetConfig) -> torch.nn.Module:
    """Our U-Net of ``cfg`` (ADM's residual up/downsampling, or ``PLAIN``), or diffusers' twin of it, fresh."""
    if name == "diffusers":
        return diffusers_twin(cfg, import_diffusers()[1])
    return UNetModel(dataclasses.replace(cfg, resblock_updown=False) if name == PLAIN else cfg)


def _first_steps(name: str, size: int, threads: int, n: int) -> list[float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    step = train_step_fn(make_model(name, UNetConfig.preset(PRESETS[size], learn_sigma=True)), size)
    return [cpu_seconds(step) for _ in range(n)]


def first_steps(name: str, size: int, n: int = 10) -> list[float]:
    """Seconds of each of the first ``n`` training steps of a freshly initialised model, in a fresh process
    (nothing warmed up by earlier measurements)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_first_steps, (name, size, torch.get_num_threads(), n))


def gflops_per_step(model: torch.nn.Module, size: int) -> float:
    """GFLOP of one training step's forward and backward (torch's FLOP counter: convolutions, matmuls,
    attention)."""
    step = train_step_fn(copy.deepcopy(model), size)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / 1e9


def reverse_step_fns(models: dict[str, torch.nn.Module], size: int, DDPMScheduler) -> dict[str, callable]:
    """One reverse step at t = 500, batch 64, without gradients: our ``GaussianDiffusion.p_sample`` for our
    models, diffusers' ``DDPMScheduler.step`` for theirs."""
    diffusion = ExperimentConfig.preset("digits").build_diffusion()
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              variance_type="learned_range", clip_sample=True)
    scheduler.set_timesteps(1000)
    x = torch.randn(SAMPLE_BATCH, 1, size, size, generator=torch.Generator().manual_seed(1))
    t = torch.full((SAMPLE_BATCH,), 500, dtype=torch.long)

    def step_fn(name, model):
        model.eval()

        @torch.no_grad()
        def step():
            if name == "diffusers":
                scheduler.step(model(x, t), 500, x)
            else:
                diffusion.p_sample(model, x, t)
        return step

    return {name: step_fn(name, model) for name, model in models.items()}


# --------------------------------------------------------------------------- the speed table


def speed(sizes, rounds: int) -> list[str]:
    version, _, DDPMScheduler = import_diffusers()
    lines = []
    for size in sizes:
        cfg = UNetConfig.preset(PRESETS[size], learn_sigma=True)
        start = len(lines)
        early = {name: first_steps(name, size) for name in NAMES}
        torch.manual_seed(0)
        models = {name: make_model(name, cfg) for name in NAMES}
        params = {name: sum(p.numel() for p in m.parameters()) / 1e6 for name, m in models.items()}
        flops = {name: gflops_per_step(m, size) for name, m in models.items()}
        train = interleaved({name: train_step_fn(m, size) for name, m in models.items()}, rounds)
        formats = interleaved({"NCHW": train_step_fn(UNetModel(cfg), size),
                               "channels_last": train_step_fn(UNetModel(cfg), size, channels_last=True)},
                              max(2, rounds // 2))
        reverse = interleaved(reverse_step_fns(models, size, DDPMScheduler), rounds, per_round=10)
        lines += [f"\n### {size}x{size}: `{PRESETS[size]}` (learned variance) vs diffusers {version} UNet2DModel",
                  "", "| model | params | train step (batch 128) | train images/s | GFLOP/step | GFLOP/s | "
                      "reverse step (batch 64) | first 10 steps / steady (max, mean) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in models:
            ratios = [s / train[name] for s in early[name]]
            lines.append(f"| {name} | {params[name]:.2f} M | {train[name] * 1e3:.0f} ms | "
                         f"{TRAIN_BATCH / train[name]:.0f} | {flops[name]:.1f} | {flops[name] / train[name]:.0f} | "
                         f"{reverse[name] * 1e3:.1f} ms | {max(ratios):.2f}x, {statistics.mean(ratios):.2f}x |")
        lines.append("")
        for name in NAMES[:-1]:
            lines.append(f"{name} / diffusers: training images/s **{train['diffusers'] / train[name]:.2f}x** "
                         f"(target >= 1.3x), reverse-step time **{reverse[name] / reverse['diffusers']:.2f}x** "
                         f"(target <= 0.8x).")
        lines.append(f"Our training step in NCHW: {formats['NCHW'] * 1e3:.0f} ms, in channels_last: "
                     f"{formats['channels_last'] * 1e3:.0f} ms.")
        print("\n".join(lines[start:]), flush=True)
    return lines


def respaced_sampling(repeats: int = 3) -> list[str]:
    """Wall-clock seconds for 64 digits with 50 respaced steps of the shipped model (best of ``repeats``)."""
    model, diffusion, _ = load_pretrained("digits", device="cpu")
    sample_with(model, diffusion, 2, 2)  # warm-up
    best = min(time_sampler(model, diffusion, SAMPLE_BATCH, 50, seed=i)[1] for i in range(repeats))
    line = f"\n64 digits, 50 respaced ancestral steps, shipped `digits` model: **{best:.2f} s** wall-clock " \
           f"(best of {repeats}; target < 1 s)."
    print(line, flush=True)
    return [line]


# --------------------------------------------------------------------------- quality at a budget


def quality(steps: tuple[int, ...], sample_steps: int, n: int = 360) -> list[str]:
    """Digits-FID every ``min(steps)`` training steps up to ``max(steps)`` of ours and diffusers' twin, with the
    same Trainer and protocol."""
    from ddpm_lite.data import load_dataset
    from ddpm_lite.metrics import extract_features, fid_from_features, load_digits_feature_net
    from ddpm_lite.train import Trainer, every

    net = load_digits_feature_net()
    train_features = extract_features(load_dataset("digits", "train").images, net)
    test_images = load_dataset("digits", "test").images[:n]
    floor = fid_from_features(extract_features(test_images, net), train_features)
    config = ExperimentConfig.preset("digits")
    cfg = config.model
    results = {}
    for name in ("ours", "diffusers"):
        fids = results[name] = {}

        def score(trainer, step, logs, name=name, fids=fids):
            samples = sample_with(trainer.ema, trainer.diffusion, n, sample_steps, shape=(1, 8, 8), seed=0)
            fids[step] = fid_from_features(extract_features(samples, net), train_features)
            print(f"{name}: step {step}, FID {fids[step]:.3f}", flush=True)

        torch.manual_seed(config.seed)
        model = make_model(name, cfg)
        trainer = Trainer.from_config(config, model=model, device="cpu", callbacks=[every(min(steps), score)])
        start = time.perf_counter()
        trainer.train(max(steps))
        fids["minutes"] = (time.perf_counter() - start) / 60
    lines = [f"\n### Quality at a budget: digits-FID of {n} samples ({sample_steps} respaced ancestral steps, EMA) "
             f"against the training digits; floor ({n} real test digits): **{floor:.3f}**", "",
             "| model | " + " | ".join(f"FID after {s} steps" for s in steps) + " | training time |",
             "|---|" + "---|" * (len(steps) + 1)]
    for name, fids in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{fids[s]:.3f} ({fids[s] / floor:.1f}x floor)" for s in steps)
                     + f" | {fids['minutes']:.1f} min |")
    print("\n".join(lines), flush=True)
    return lines


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16], choices=sorted(PRESETS))
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds (default 7)")
    parser.add_argument("--quality", action="store_true", help="also train both for FID at 1,000 and 2,000 steps")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed tables (with --quality)")
    parser.add_argument("--sample-steps", type=int, default=100, help="respaced steps for the quality samples")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = [f"Machine: {describe()}."]
    print(lines[0], flush=True)
    if not args.no_speed:
        lines += speed(args.sizes, args.rounds) + respaced_sampling()
    if args.quality:
        lines += quality((1000, 2000), args.sample_steps)
    print("\n# --- markdown for docs/benchmarks.md ---\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
